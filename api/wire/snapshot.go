package wire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// A snapshot stream is one JSON object, {"instances":[...],"tombstones":[...]},
// written item by item (one per line) so neither side holds the whole
// registry as JSON: a restarting node reads a peer's whole state through it.

// MaxSnapshotItem bounds one element of a snapshot stream. An instance
// within the public limits is at most about 100 KiB (64 addrs of 1 KiB,
// 16 KiB of metadata); anything larger is refused rather than buffered.
const MaxSnapshotItem = 1 << 20

// EncodeSnapshot writes a snapshot stream to w and flushes it. produce
// hands every item to its sink, instances first, then tombstones.
func EncodeSnapshot(w *bufio.Writer, produce func(sink func(SnapshotItem) error) error) error {
	if _, err := w.WriteString(`{"instances":[`); err != nil {
		return err
	}
	inTombs, first := false, true
	buf := make([]byte, 0, 1024)
	err := produce(func(it SnapshotItem) error {
		buf = buf[:0]
		if it.Tombstone != nil && !inTombs {
			inTombs, first = true, true
			buf = append(buf, `],"tombstones":[`...)
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		switch {
		case it.Tombstone != nil:
			buf = it.Tombstone.AppendJSON(buf)
		case inTombs:
			return errors.New("snapshot: instance after tombstones")
		case it.Instance == nil:
			return errors.New("snapshot: empty item")
		default:
			buf = it.Instance.AppendJSON(buf)
		}
		buf = append(buf, '\n')
		_, err := w.Write(buf)
		return err
	})
	if err != nil {
		return err
	}
	if !inTombs {
		if _, err := w.WriteString(`],"tombstones":[`); err != nil {
			return err
		}
	}
	if _, err := w.WriteString("]}\n"); err != nil {
		return err
	}
	return w.Flush()
}

// DecodeSnapshot reads a snapshot stream and hands each element to sink.
// Unknown keys are skipped; malformed input, or an element larger than
// MaxSnapshotItem, is an error, never a panic. Instances are decoded in
// place into slabs, so sink may keep the pointers it gets.
func DecodeSnapshot(r io.Reader, sink func(SnapshotItem) error) error {
	v := newValueReader(r, 256<<10, MaxSnapshotItem)
	if err := expectByte(v, '{'); err != nil {
		return err
	}
	if c, err := v.peek(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	} else if c == '}' {
		v.off++
		return nil
	}
	var slab []Instance
	for {
		raw, err := v.value()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			return fmt.Errorf("snapshot: key: %w", err)
		}
		if err := expectByte(v, ':'); err != nil {
			return err
		}
		switch key {
		case "instances", "tombstones":
			if err := expectByte(v, '['); err != nil {
				return err
			}
			c, err := v.peek()
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", key, err)
			}
			if c == ']' { // empty
				v.off++
			}
			for c != ']' {
				var it SnapshotItem
				if key == "instances" {
					if len(slab) == 0 {
						slab = make([]Instance, 256)
					}
					it.Instance, slab = &slab[0], slab[1:]
					err = v.instance(it.Instance)
				} else {
					it.Tombstone = new(Tombstone)
					err = v.tombstone(it.Tombstone)
				}
				if err != nil {
					return fmt.Errorf("snapshot %s: %w", key, err)
				}
				if err := sink(it); err != nil {
					return err
				}
				if c, err = v.next(); err != nil {
					return fmt.Errorf("snapshot %s: %w", key, err)
				}
				if c != ',' && c != ']' {
					return fmt.Errorf("snapshot %s: expected ',' or ']', got %q", key, c)
				}
			}
		default:
			raw, err := v.value()
			if err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			if !json.Valid(raw) {
				return fmt.Errorf("snapshot: invalid value of %q", key)
			}
		}
		c, err := v.next()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		switch c {
		case ',':
		case '}':
			return nil
		default:
			return fmt.Errorf("snapshot: expected ',' or '}', got %q", c)
		}
	}
}

func expectByte(v *valueReader, want byte) error {
	c, err := v.next()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if c != want {
		return fmt.Errorf("snapshot: expected %q, got %q", want, c)
	}
	return nil
}
