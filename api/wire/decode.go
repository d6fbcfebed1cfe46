package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"unicode/utf8"
)

// Fast-path decoders of the peer messages. They take the JSON the encoders
// of this package write (and any equivalent spacing or key order);
// anything else (unknown or differently cased keys, duplicate keys, null,
// escapes in keys, numbers with fractions or exponents) makes the fast path
// give up, and the same bytes are decoded by encoding/json, which yields
// the result or the error it always did. FuzzFastDecode checks that the
// fast path never disagrees with encoding/json.

// scanner is the fast-path decoder over a complete JSON text. Every method
// reports false when the input is not in the shape it handles; the caller
// then falls back to encoding/json on the whole text.
type scanner struct {
	b []byte
	i int
	// intern, when set, shares the strings that repeat across a stream
	// (env, zone, appid, version, metadata): one allocation each instead
	// of one per instance.
	intern map[string]string
}

// maxInterned bounds an intern table.
const maxInterned = 8192

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *scanner) ws() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// eat skips whitespace and consumes c if it comes next.
func (s *scanner) eat(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str reads a string value. Plain strings are sliced and copied; strings
// with escapes are unquoted by encoding/json (same result as the slow path).
func (s *scanner) str() (string, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i + 1
	high := false
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			seg := s.b[start:j]
			if high && !utf8.Valid(seg) {
				return s.escapedStr(start)
			}
			s.i = j + 1
			return string(seg), true
		case c == '\\':
			return s.escapedStr(start)
		case c < 0x20:
			return "", false
		case c >= 0x80:
			high = true
		}
	}
	return "", false
}

// istr is str for values that repeat across instances.
func (s *scanner) istr() (string, bool) {
	if s.intern == nil {
		return s.str()
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			if v, ok := s.intern[string(s.b[start:j])]; ok {
				s.i = j + 1
				return v, true
			}
			v, ok := s.str()
			if ok && len(s.intern) < maxInterned {
				s.intern[v] = v
			}
			return v, ok
		case c == '\\' || c < 0x20 || c >= 0x80:
			return s.str()
		}
	}
	return "", false
}

func (s *scanner) escapedStr(start int) (string, bool) {
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			var out string
			if json.Unmarshal(s.b[start-1:j+1], &out) != nil {
				return "", false
			}
			s.i = j + 1
			return out, true
		}
	}
	return "", false
}

// kind reads an op kind; the known ones without an allocation.
func (s *scanner) kind() (OpKind, bool) {
	start := s.i
	if k, ok := s.key0(); ok {
		switch string(k) {
		case string(OpRegister):
			return OpRegister, true
		case string(OpRenew):
			return OpRenew, true
		case string(OpCancel):
			return OpCancel, true
		case string(OpSet):
			return OpSet, true
		case string(OpImport):
			return OpImport, true
		}
	}
	s.i = start
	v, ok := s.str()
	return OpKind(v), ok
}

// key0 reads a plain ASCII string (no escapes) as bytes.
func (s *scanner) key0() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			k := s.b[s.i+1 : j]
			s.i = j + 1
			return k, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// key reads an object key; only plain ASCII keys (what our encoders write)
// take the fast path.
func (s *scanner) key() ([]byte, bool) {
	k, ok := s.key0()
	if !ok || !s.eat(':') {
		return nil, false
	}
	return k, true
}

// digits reads -?(0|[1-9][0-9]*) not followed by a fraction or exponent and
// returns its magnitude (saturated) and sign.
func (s *scanner) digits() (mag uint64, neg, ok bool) {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		d := uint64(s.b[s.i] - '0')
		if mag > (math.MaxUint64-d)/10 {
			return 0, false, false
		}
		mag = mag*10 + d
		s.i++
	}
	n := s.i - start
	if n == 0 || (n > 1 && s.b[start] == '0') {
		return 0, false, false
	}
	if s.i < len(s.b) {
		if c := s.b[s.i]; c == '.' || c == 'e' || c == 'E' {
			return 0, false, false
		}
	}
	return mag, neg, true
}

func (s *scanner) int64() (int64, bool) {
	mag, neg, ok := s.digits()
	switch {
	case !ok:
		return 0, false
	case neg && mag <= 1<<63:
		return -int64(mag), true // -1<<63 wraps to itself
	case !neg && mag <= math.MaxInt64:
		return int64(mag), true
	}
	return 0, false
}

func (s *scanner) uint32() (uint32, bool) {
	mag, neg, ok := s.digits()
	if !ok || neg || mag > math.MaxUint32 {
		return 0, false
	}
	return uint32(mag), true
}

func (s *scanner) boolean() (bool, bool) {
	s.ws()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true, true
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false, true
	}
	return false, false
}

// object walks the members of an object, calling field for each key with
// the scanner positioned at the value; field must consume the value.
// Duplicate keys make it give up (encoding/json merges some of them), so
// field passes a bit per known key to seen.
func (s *scanner) object(field func(key []byte, seen *uint32) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	var seen uint32
	for {
		k, ok := s.key()
		if !ok || !field(k, &seen) {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat('}')
	}
}

// once marks bit in seen and reports whether it was unset.
func once(seen *uint32, bit uint) bool {
	if *seen&(1<<bit) != 0 {
		return false
	}
	*seen |= 1 << bit
	return true
}

// array walks the elements of an array; [] yields none.
func (s *scanner) array(elem func() bool) bool {
	if !s.eat('[') {
		return false
	}
	if s.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.eat(',') {
			continue
		}
		return s.eat(']')
	}
}

func (s *scanner) strings() ([]string, bool) {
	out := make([]string, 0, 2) // [] is an empty, non-nil slice, as with encoding/json
	ok := s.array(func() bool {
		v, ok := s.str()
		out = append(out, v)
		return ok
	})
	return out, ok
}

// stringMap reads an object of strings. Its keys are data, so they may be
// escaped or non-ASCII; the same key twice keeps the last value, as with
// encoding/json.
func (s *scanner) stringMap() (map[string]string, bool) {
	if !s.eat('{') {
		return nil, false
	}
	out := map[string]string{}
	if s.eat('}') {
		return out, true
	}
	for {
		k, ok := s.istr()
		if !ok || !s.eat(':') {
			return nil, false
		}
		v, ok := s.istr()
		if !ok {
			return nil, false
		}
		out[k] = v
		if s.eat(',') {
			continue
		}
		return out, s.eat('}')
	}
}

func (s *scanner) instance(in *Instance) bool {
	return s.object(func(k []byte, seen *uint32) bool {
		var ok bool
		switch string(k) {
		case "region":
			ok = once(seen, 0)
			in.Region, ok = s.istrIf(ok)
		case "zone":
			ok = once(seen, 1)
			in.Zone, ok = s.istrIf(ok)
		case "env":
			ok = once(seen, 2)
			in.Env, ok = s.istrIf(ok)
		case "appid":
			ok = once(seen, 3)
			in.AppID, ok = s.istrIf(ok)
		case "hostname":
			ok = once(seen, 4)
			in.Hostname, ok = s.strIf(ok)
		case "addrs":
			if once(seen, 5) {
				in.Addrs, ok = s.strings()
			}
		case "version":
			ok = once(seen, 6)
			in.Version, ok = s.istrIf(ok)
		case "metadata":
			if once(seen, 7) {
				in.Metadata, ok = s.stringMap()
			}
		case "status":
			if once(seen, 8) {
				in.Status, ok = s.uint32()
			}
		case "reg_timestamp":
			ok = once(seen, 9)
			in.RegTimestamp, ok = s.int64If(ok)
		case "up_timestamp":
			ok = once(seen, 10)
			in.UpTimestamp, ok = s.int64If(ok)
		case "renew_timestamp":
			ok = once(seen, 11)
			in.RenewTimestamp, ok = s.int64If(ok)
		case "dirty_timestamp":
			ok = once(seen, 12)
			in.DirtyTimestamp, ok = s.int64If(ok)
		case "latest_timestamp":
			ok = once(seen, 13)
			in.LatestTimestamp, ok = s.int64If(ok)
		}
		return ok
	})
}

// strIf and int64If read a value only when ok (a first occurrence).
func (s *scanner) strIf(ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return s.str()
}

func (s *scanner) istrIf(ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return s.istr()
}

func (s *scanner) int64If(ok bool) (int64, bool) {
	if !ok {
		return 0, false
	}
	return s.int64()
}

func (s *scanner) key4(k *Key) bool {
	return s.object(func(name []byte, seen *uint32) bool {
		var ok bool
		switch string(name) {
		case "env":
			ok = once(seen, 0)
			k.Env, ok = s.istrIf(ok)
		case "appid":
			ok = once(seen, 1)
			k.AppID, ok = s.istrIf(ok)
		case "zone":
			ok = once(seen, 2)
			k.Zone, ok = s.istrIf(ok)
		case "hostname":
			ok = once(seen, 3)
			k.Hostname, ok = s.strIf(ok)
		}
		return ok
	})
}

func (s *scanner) setOp(so *SetOp) bool {
	return s.object(func(k []byte, seen *uint32) bool {
		var ok bool
		switch string(k) {
		case "env":
			ok = once(seen, 0)
			so.Env, ok = s.strIf(ok)
		case "appid":
			ok = once(seen, 1)
			so.AppID, ok = s.strIf(ok)
		case "zone":
			ok = once(seen, 2)
			so.Zone, ok = s.strIf(ok)
		case "hostnames":
			if once(seen, 3) {
				so.Hostnames, ok = s.strings()
			}
		case "statuses":
			if once(seen, 4) {
				so.Statuses = []uint32{}
				ok = s.array(func() bool {
					v, ok := s.uint32()
					so.Statuses = append(so.Statuses, v)
					return ok
				})
			}
		case "metadata":
			if once(seen, 5) {
				so.Metadata = []map[string]string{}
				ok = s.array(func() bool {
					m, ok := s.stringMap()
					so.Metadata = append(so.Metadata, m)
					return ok
				})
			}
		case "set_timestamp":
			ok = once(seen, 6)
			so.SetTimestamp, ok = s.int64If(ok)
		}
		return ok
	})
}

func (s *scanner) op(op *Op) bool {
	return s.object(func(k []byte, seen *uint32) bool {
		var ok bool
		switch string(k) {
		case "op":
			if once(seen, 0) {
				op.Kind, ok = s.kind()
			}
		case "replication":
			if once(seen, 1) {
				op.Replication, ok = s.boolean()
			}
		case "from_zone":
			if once(seen, 2) {
				op.FromZone, ok = s.boolean()
			}
		case "instance":
			if once(seen, 3) {
				op.Instance = new(Instance)
				ok = s.instance(op.Instance)
			}
		case "key":
			if once(seen, 4) {
				op.Key = new(Key)
				ok = s.key4(op.Key)
			}
		case "dirty_timestamp":
			ok = once(seen, 5)
			op.DirtyTimestamp, ok = s.int64If(ok)
		case "set":
			if once(seen, 6) {
				op.Set = new(SetOp)
				ok = s.setOp(op.Set)
			}
		case "owner":
			ok = once(seen, 7)
			op.Owner, ok = s.istrIf(ok)
		}
		return ok
	})
}

// fastReplicateRequest decodes a whole replicate request body; false means
// "use encoding/json" (req may then hold partial data and must be reset).
func fastReplicateRequest(b []byte, req *ReplicateRequest) bool {
	return fastReplicateRequestIntern(b, req, nil)
}

func fastReplicateRequestIntern(b []byte, req *ReplicateRequest, intern map[string]string) bool {
	s := scanner{b: b, intern: intern}
	ok := s.object(func(k []byte, seen *uint32) bool {
		var ok bool
		switch string(k) {
		case "from":
			ok = once(seen, 0)
			req.From, ok = s.strIf(ok)
		case "ops":
			if once(seen, 1) {
				req.Ops = []Op{}
				ok = s.array(func() bool {
					req.Ops = append(req.Ops, Op{})
					return s.op(&req.Ops[len(req.Ops)-1])
				})
			}
		}
		return ok
	})
	return ok && s.end()
}

// DecodeReplicateRequest decodes a replicate request body into req, which
// must be zero. The fast path shares the strings that repeat across ops
// (env, zone, appid, version, metadata) through a pooled intern table;
// anything it does not take is decoded by encoding/json. Trailing data
// after the object is an error.
func DecodeReplicateRequest(b []byte, req *ReplicateRequest) error {
	ip := internPool.Get().(*map[string]string)
	ok := fastReplicateRequestIntern(b, req, *ip)
	internPool.Put(ip)
	if ok {
		return nil
	}
	*req = ReplicateRequest{}
	return unmarshalStrict(b, req)
}

// unmarshalStrict is json.Unmarshal of exactly one JSON value.
func unmarshalStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// internPool holds intern tables for replicate requests. A table keeps its
// strings between requests (they are immutable and mostly the same ones);
// it stops growing at maxInterned.
var internPool = sync.Pool{New: func() any { m := map[string]string{}; return &m }}

// fastReplicateResponse decodes a whole replicate answer.
func fastReplicateResponse(b []byte, resp *ReplicateResponse) bool {
	s := scanner{b: b}
	ok := s.object(func(k []byte, seen *uint32) bool {
		if string(k) != "results" || !once(seen, 0) {
			return false
		}
		resp.Results = []OpResult{}
		return s.array(func() bool {
			resp.Results = append(resp.Results, OpResult{})
			r := &resp.Results[len(resp.Results)-1]
			return s.object(func(k []byte, seen *uint32) bool {
				var ok bool
				switch string(k) {
				case "code":
					var v int64
					ok = once(seen, 0)
					v, ok = s.int64If(ok)
					r.Code = int(v)
				case "message":
					ok = once(seen, 1)
					r.Message, ok = s.strIf(ok)
				case "applied":
					if once(seen, 2) {
						r.Applied, ok = s.boolean()
					}
				case "instance":
					if once(seen, 3) {
						r.Instance = new(Instance)
						ok = s.instance(r.Instance)
					}
				}
				return ok
			})
		})
	})
	return ok && s.end()
}

// DecodeReplicateResponse decodes a replicate answer, fast or by
// encoding/json.
func DecodeReplicateResponse(b []byte) (*ReplicateResponse, error) {
	var out ReplicateResponse
	if fastReplicateResponse(b, &out) {
		return &out, nil
	}
	out = ReplicateResponse{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecodeInstance decodes one complete instance object, fast or by
// encoding/json.
func DecodeInstance(b []byte, in *Instance) error {
	s := scanner{b: b}
	if s.instance(in) && s.end() {
		return nil
	}
	*in = Instance{}
	return json.Unmarshal(b, in)
}

// decodeTombstone decodes one complete tombstone object.
func decodeTombstone(b []byte, t *Tombstone) error {
	s := scanner{b: b}
	if s.tombstone(t) && s.end() {
		return nil
	}
	*t = Tombstone{}
	return json.Unmarshal(b, t)
}

func (s *scanner) tombstone(t *Tombstone) bool {
	return s.object(func(k []byte, seen *uint32) bool {
		var ok bool
		switch string(k) {
		case "key":
			if once(seen, 0) {
				ok = s.key4(&t.Key)
			}
		case "at":
			ok = once(seen, 1)
			t.At, ok = s.int64If(ok)
		}
		return ok
	})
}

// valueReader splits a JSON stream into values without decoding them: it
// finds where each value ends (strings, escapes and nesting) in a buffer
// it refills, so a value is handed out as one contiguous slice. It
// validates nothing; the decoders of the values do.
type valueReader struct {
	r        io.Reader
	buf      []byte
	off, end int // unread data is buf[off:end]
	err      error
	max      int // largest value accepted
	intern   map[string]string
}

func newValueReader(r io.Reader, size, max int) *valueReader {
	return &valueReader{r: r, buf: make([]byte, size), max: max, intern: map[string]string{}}
}

// fill reads more data, keeping buf[off:end] (moved to the front).
func (v *valueReader) fill() error {
	if v.err != nil {
		return v.err
	}
	if v.off > 0 {
		v.end = copy(v.buf, v.buf[v.off:v.end])
		v.off = 0
	}
	if v.end == len(v.buf) {
		if len(v.buf) >= v.max {
			return fmt.Errorf("value larger than %d bytes", v.max)
		}
		v.buf = append(v.buf, make([]byte, min(len(v.buf), v.max-len(v.buf)))...)
	}
	for {
		n, err := v.r.Read(v.buf[v.end:])
		v.end += n
		if err != nil {
			v.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// peek skips whitespace and returns the next byte without consuming it.
func (v *valueReader) peek() (byte, error) {
	for {
		for v.off < v.end {
			if c := v.buf[v.off]; !isSpace(c) {
				return c, nil
			}
			v.off++
		}
		if err := v.fill(); err != nil {
			return 0, err
		}
	}
}

// next skips whitespace and consumes the next byte.
func (v *valueReader) next() (byte, error) {
	c, err := v.peek()
	if err == nil {
		v.off++
	}
	return c, err
}

// value returns the next value's bytes, valid until the next call.
func (v *valueReader) value() ([]byte, error) {
	first, err := v.peek()
	if err != nil {
		return nil, err
	}
	switch first {
	case ',', ':', ']', '}':
		return nil, fmt.Errorf("unexpected %q", first)
	}
	nested := first == '{' || first == '['
	j := 0 // scanned bytes, relative to off (which fill may move)
	depth, inStr, esc := 0, false, false
	for {
		for ; v.off+j < v.end; j++ {
			c := v.buf[v.off+j]
			if inStr {
				switch {
				case esc:
					esc = false
				case c == '\\':
					esc = true
				case c == '"':
					inStr = false
					if depth == 0 {
						return v.take(j + 1), nil
					}
				}
				continue
			}
			switch {
			case c == '"' && (nested || j == 0):
				inStr = true
			case nested && (c == '{' || c == '['):
				depth++
			case nested && (c == '}' || c == ']'):
				if depth--; depth == 0 {
					return v.take(j + 1), nil
				}
			case !nested && (c == ',' || c == ']' || c == '}' || isSpace(c)):
				return v.take(j), nil
			}
		}
		if err := v.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				if !nested && !inStr && j > 0 {
					return v.take(j), nil // a number or literal at the very end
				}
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// instance decodes the next value, an instance, in place in the buffer:
// a complete object our codec reads is taken as it is; anything else
// (a value cut by the end of the buffer, or one only encoding/json
// reads) is delimited by value first.
func (v *valueReader) instance(in *Instance) error {
	s := scanner{b: v.buf[v.off:v.end], intern: v.intern}
	if s.instance(in) {
		v.off += s.i
		return nil
	}
	*in = Instance{}
	raw, err := v.value()
	if err != nil {
		return err
	}
	s = scanner{b: raw, intern: v.intern}
	if s.instance(in) && s.end() {
		return nil
	}
	*in = Instance{}
	return json.Unmarshal(raw, in)
}

// tombstone is instance for a tombstone.
func (v *valueReader) tombstone(t *Tombstone) error {
	s := scanner{b: v.buf[v.off:v.end], intern: v.intern}
	if s.tombstone(t) {
		v.off += s.i
		return nil
	}
	*t = Tombstone{}
	raw, err := v.value()
	if err != nil {
		return err
	}
	return decodeTombstone(raw, t)
}

func (v *valueReader) take(n int) []byte {
	b := v.buf[v.off : v.off+n]
	v.off += n
	return b
}
