package registry

import (
	"hash/maphash"
	"iter"
	"strings"
)

// zoneBucket holds one zone's instances of an app. Most zones hold a few
// instances: up to smallMax they live in a slice (8 bytes each) rather than a
// map (about 250 bytes even for a single entry), which halves the memory of
// apps with one or two instances per zone. Larger zones switch to a hash
// table of record pointers (recTable) for O(1) lookups and stay there.
type zoneBucket struct {
	name  string
	small []*rec    // used while big == nil
	big   *recTable // nil until the zone outgrows small
	up    int       // UP instances
}

const smallMax = 8

func (b *zoneBucket) get(host string) *rec {
	// A stored hostname ends at the first NUL of its record (validation
	// refuses control characters), so a key holding one would match a
	// record by its prefix: it matches nothing. Keys of renew, cancel and
	// peers' ops reach here unvalidated.
	if strings.IndexByte(host, 0) >= 0 {
		return nil
	}
	if b.big != nil {
		return b.big.get(host)
	}
	for _, rc := range b.small {
		if rc.hasHost(host) {
			return rc
		}
	}
	return nil
}

// set stores nr under its hostname and returns the record it replaced.
func (b *zoneBucket) set(nr *rec) (old *rec) {
	if b.big != nil {
		return b.big.set(nr)
	}
	host := nr.host()
	for i, rc := range b.small {
		if rc.hasHost(host) {
			b.small[i] = nr
			return rc
		}
	}
	if len(b.small) < smallMax {
		b.small = append(b.small, nr)
		return nil
	}
	b.big = newRecTable(4 * smallMax)
	for _, rc := range b.small {
		b.big.set(rc)
	}
	b.small = nil
	b.big.set(nr)
	return nil
}

func (b *zoneBucket) del(host string) {
	if b.big != nil {
		b.big.del(host)
		return
	}
	for i, rc := range b.small {
		if rc.hasHost(host) {
			last := len(b.small) - 1
			b.small[i] = b.small[last]
			b.small[last] = nil
			b.small = b.small[:last]
			if last == 0 {
				b.small = nil
			}
			return
		}
	}
}

func (b *zoneBucket) len() int {
	if b.big != nil {
		return b.big.n
	}
	return len(b.small)
}

// recs yields every record of the zone (no particular order).
func (b *zoneBucket) recs() iter.Seq[*rec] {
	return func(yield func(*rec) bool) {
		if b.big != nil {
			for _, rc := range b.big.slots {
				if rc != nil && !yield(rc) {
					return
				}
			}
			return
		}
		for _, rc := range b.small {
			if !yield(rc) {
				return
			}
		}
	}
}

// recTable is an open-addressing hash table (linear probing, at most 3/4
// full) of records keyed by their hostname. It holds one pointer per slot,
// 8 to 16 bytes per record, where a map[string]*rec holds the key's string
// header too and runs emptier: about 40 bytes per record, which was a fifth
// of an instance's memory.
type recTable struct {
	slots []*rec // length a power of two; nil = free
	n     int
	seed  maphash.Seed
}

func newRecTable(size int) *recTable {
	return &recTable{slots: make([]*rec, size), seed: maphash.MakeSeed()}
}

func (t *recTable) home(host string) int {
	return int(maphash.String(t.seed, host) & uint64(len(t.slots)-1))
}

// find returns the slot of host, or the free slot where it would go.
func (t *recTable) find(host string) int {
	mask := len(t.slots) - 1
	for i := t.home(host); ; i = (i + 1) & mask {
		if rc := t.slots[i]; rc == nil || rc.hasHost(host) {
			return i
		}
	}
}

func (t *recTable) get(host string) *rec { return t.slots[t.find(host)] }

func (t *recTable) set(nr *rec) (old *rec) {
	i := t.find(nr.host())
	if old = t.slots[i]; old != nil {
		t.slots[i] = nr
		return old
	}
	if 4*(t.n+1) > 3*len(t.slots) {
		t.grow()
		i = t.find(nr.host())
	}
	t.slots[i] = nr
	t.n++
	return nil
}

func (t *recTable) grow() {
	old := t.slots
	t.slots = make([]*rec, 2*len(old))
	for _, rc := range old {
		if rc != nil {
			t.slots[t.find(rc.host())] = rc
		}
	}
}

// del removes host, moving the records after it back into the gap so that
// every record stays reachable from its home slot (no tombstones).
func (t *recTable) del(host string) {
	i := t.find(host)
	if t.slots[i] == nil {
		return
	}
	t.slots[i] = nil
	t.n--
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		k := t.home(t.slots[j].host())
		// The record at j may stay when its home k lies cyclically in (i, j].
		if (i <= j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		t.slots[i], t.slots[j] = t.slots[j], nil
		i = j
	}
}
