package registry

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync/atomic"
	"unique"
)

// rec is the stored form of one instance, kept lean (spec target: <= 1 KiB
// per instance at 100k instances). env, appid and zone are not stored: they
// are the keys of the maps that hold the record. Region, version and
// metadata are interned (most instances of an app share them).
//
// A rec is immutable once published in the tree, except renew (atomic):
// every content change (register, set, import) installs a new rec. So
// readers may hold *rec pointers after releasing the registry lock (the
// poll payload is encoded outside the lock from such pointers), and Renew
// only needs the read lock.
type rec struct {
	hostname string
	addrs    []string
	region   unique.Handle[string]
	version  unique.Handle[string]
	meta     unique.Handle[string] // packed sorted pairs (packMeta); zero = no metadata
	owner    unique.Handle[string] // client address that registered it; zero = unknown
	renew    atomic.Int64
	counted  atomic.Bool // renewed at least once: counts toward the expected renews
	reg      int64
	up       int64
	dirty    int64
	latest   int64
	status   uint32
}

// metaHandle is an interned packed metadata map (packMeta).
type metaHandle = unique.Handle[string]

var noHandle unique.Handle[string]

func intern(s string) unique.Handle[string] {
	if s == "" {
		return noHandle
	}
	return unique.Make(s) // clones s, so a request buffer is never retained
}

func unintern(h unique.Handle[string]) string {
	if h == noHandle {
		return ""
	}
	return h.Value()
}

// packMeta encodes a metadata map as sorted (uvarint len, bytes) pairs so
// equal maps intern to one string. Empty or nil maps mean "no metadata".
func packMeta(m map[string]string) unique.Handle[string] {
	if len(m) == 0 {
		return noHandle
	}
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		keys = append(keys, k)
		n += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	slices.Sort(keys)
	buf := make([]byte, 0, n)
	for _, k := range keys {
		v := m[k]
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	return unique.Make(string(buf))
}

// unpackMeta returns a fresh map. With emptyMap the result is never nil
// (fetch/poll answers emit {} for no metadata, spec 3.2.4).
func unpackMeta(h unique.Handle[string], emptyMap bool) map[string]string {
	if h == noHandle {
		if emptyMap {
			return map[string]string{}
		}
		return nil
	}
	s := h.Value()
	m := make(map[string]string, 4)
	for len(s) > 0 {
		var k, v string
		k, s = nextPacked(s)
		v, s = nextPacked(s)
		m[k] = v
	}
	return m
}

func nextPacked(s string) (string, string) {
	var n uint64
	var shift uint
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			i++
			break
		}
		shift += 7
	}
	s = s[i:]
	return s[:n], s[n:]
}

// packAddrs copies addrs into one allocation (plus the slice header array),
// detaching them from the request buffer they were parsed from.
func packAddrs(in []string) []string {
	n := 0
	for _, a := range in {
		n += len(a)
	}
	var b strings.Builder
	b.Grow(n)
	for _, a := range in {
		b.WriteString(a)
	}
	all := b.String()
	out := make([]string, len(in))
	off := 0
	for i, a := range in {
		out[i] = all[off : off+len(a)]
		off += len(a)
	}
	return out
}

// newRec builds the content part of a record from in (timestamps are set by
// the caller). Done outside the registry lock.
func newRec(in *Instance) *rec {
	return &rec{
		hostname: strings.Clone(in.Hostname),
		addrs:    packAddrs(in.Addrs),
		region:   intern(in.Region),
		version:  intern(in.Version),
		meta:     packMeta(in.Metadata),
		status:   in.Status,
	}
}

// clone copies r for a copy-on-write change (Set).
func (r *rec) clone() *rec {
	c := &rec{
		hostname: r.hostname,
		addrs:    r.addrs,
		region:   r.region,
		version:  r.version,
		meta:     r.meta,
		owner:    r.owner,
		reg:      r.reg,
		up:       r.up,
		dirty:    r.dirty,
		latest:   r.latest,
		status:   r.status,
	}
	c.renew.Store(r.renew.Load())
	c.counted.Store(r.counted.Load())
	return c
}

// instance returns a caller-owned copy. emptyMeta selects {} instead of null
// for no metadata.
func (r *rec) instance(env, appid, zone string, emptyMeta bool) Instance {
	return Instance{
		Region:          unintern(r.region),
		Zone:            zone,
		Env:             env,
		AppID:           appid,
		Hostname:        r.hostname,
		Addrs:           slices.Clone(r.addrs),
		Version:         unintern(r.version),
		Metadata:        unpackMeta(r.meta, emptyMeta),
		Status:          r.status,
		RegTimestamp:    r.reg,
		UpTimestamp:     r.up,
		RenewTimestamp:  r.renew.Load(),
		DirtyTimestamp:  r.dirty,
		LatestTimestamp: r.latest,
	}
}

func (r *rec) isUp() bool { return r.status == StatusUp }
