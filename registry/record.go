package registry

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"unique"
)

// rec is the stored form of one instance, kept lean (issue target: <= 350
// bytes of RSS per instance at 100 000). env, appid and zone are not
// stored: they are the keys of the maps that hold the record. Region,
// version, metadata and status are interned together as the record's
// profile (most instances of an app share all four); hostname and addrs
// share one allocation, the hostname ending at the first NUL. The owner is
// kept as 16 address bytes, not interned: every pod registers from its own
// address, and an interned string per address cost 220 bytes per instance.
// The renew timestamp and the "counted" flag share one atomic word. The
// struct is 80 bytes, a size class of its own: a field more costs 16 bytes
// per instance.
//
// A rec is immutable once published in the tree, except its renew word
// (atomic): every content change (register, set, import) installs a new
// rec. So readers may hold *rec pointers after releasing the registry lock
// (the poll payload is encoded outside the lock from such pointers), and
// Renew only needs the read lock.
type rec struct {
	ha     string                 // hostname, then every addr preceded by a NUL (packHostAddrs)
	prof   unique.Handle[profile] // region, version, packed metadata, status
	owner  ownerIP                // client address that registered it
	renew  renewWord
	reg    int64
	up     int64
	dirty  int64
	latest int64
}

// profile is what the instances of an app usually share.
type profile struct {
	region, version string
	meta            string // packed sorted pairs (packMeta); "" = no metadata
	status          uint8  // validated: 1 or 2
}

// ownerIP is an address in its 16-byte form (IPv4 as IPv4-mapped); all
// zeros, the unspecified address no client sends from, is unknown.
type ownerIP [16]byte

func (o ownerIP) known() bool { return o != ownerIP{} }

func (o ownerIP) String() string {
	if !o.known() {
		return ""
	}
	return netip.AddrFrom16(o).Unmap().String()
}

// renewWord holds renew_timestamp<<1 | counted, where counted means the
// instance renewed at least once and so counts toward the expected renews.
// Timestamps are clamped to within ±(2^62-1) ns (the year 2116) to fit.
type renewWord struct{ v atomic.Int64 }

const maxRenewTS = 1<<62 - 1

func clampRenewTS(ts int64) int64 { return min(max(ts, -maxRenewTS), maxRenewTS) }

func (w *renewWord) ts() int64     { return w.v.Load() >> 1 }
func (w *renewWord) counted() bool { return w.v.Load()&1 != 0 }

// init sets both parts of a record not yet published.
func (w *renewWord) init(ts int64, counted bool) {
	v := clampRenewTS(ts) << 1
	if counted {
		v |= 1
	}
	w.v.Store(v)
}

// renewed stores ts and marks the record counted; it reports whether this
// was its first renew.
func (w *renewWord) renewed(ts int64) (first bool) {
	return w.v.Swap(clampRenewTS(ts)<<1|1)&1 == 0
}

func makeProfile(region, version, meta string, status uint8) unique.Handle[profile] {
	return unique.Make(profile{region: region, version: version, meta: meta, status: status}) // clones the strings
}

// parseOwner is the stored form of an owner; "" or anything but an IP
// address is unknown.
func parseOwner(s string) ownerIP {
	if s == "" {
		return ownerIP{} // most replicated registers: no owner, and ParseAddr's error would allocate
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ownerIP{}
	}
	return a.WithZone("").As16() // an IPv4-mapped address is its IPv4 address, as source addresses are
}

// host is the hostname: ha up to its first NUL (validation refuses control
// characters in hostnames and addrs).
func (r *rec) host() string {
	if i := strings.IndexByte(r.ha, 0); i >= 0 {
		return r.ha[:i]
	}
	return r.ha
}

// hasHost reports whether the record's hostname is h, without finding the
// hostname's end first (the hash table compares on every probe). h holds
// no NUL: zoneBucket.get refuses such keys, which would match by prefix.
func (r *rec) hasHost(h string) bool {
	return strings.HasPrefix(r.ha, h) && (len(r.ha) == len(h) || r.ha[len(h)] == 0)
}

func (r *rec) statusOf() uint32 { return uint32(r.prof.Value().status) }

// addrs iterates the record's addrs in order.
func (r *rec) addrs(yield func(string) bool) {
	s := r.ha[len(r.host()):]
	for len(s) > 0 {
		s = s[1:] // the NUL before each addr
		a := s
		if i := strings.IndexByte(s, 0); i >= 0 {
			a, s = s[:i], s[i:]
		} else {
			s = ""
		}
		if !yield(a) {
			return
		}
	}
}

func (r *rec) addrList() []string {
	var out []string
	for a := range r.addrs {
		out = append(out, a)
	}
	return out
}

// packHostAddrs copies hostname and addrs into one string, detached from the
// request buffer they were parsed from. NUL separates them: validation
// refuses control characters in both.
func packHostAddrs(host string, addrs []string) string {
	n := len(host)
	for _, a := range addrs {
		n += 1 + len(a)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(host)
	for _, a := range addrs {
		b.WriteByte(0)
		b.WriteString(a)
	}
	return b.String()
}

// packMeta encodes a metadata map as sorted (uvarint len, bytes) pairs so
// equal maps intern to one string. Empty or nil maps mean "no metadata".
func packMeta(m map[string]string) string {
	if len(m) == 0 {
		return ""
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
	return string(buf)
}

// unpackMeta returns a fresh map. With emptyMap the result is never nil
// (fetch/poll answers emit {} for no metadata, spec 3.2.4).
func unpackMeta(s string, emptyMap bool) map[string]string {
	if s == "" {
		if emptyMap {
			return map[string]string{}
		}
		return nil
	}
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

// newRec builds the content part of a record from in (timestamps are set by
// the caller). Done outside the registry lock.
func newRec(in *Instance) *rec {
	return &rec{
		ha:   packHostAddrs(in.Hostname, in.Addrs),
		prof: makeProfile(in.Region, in.Version, packMeta(in.Metadata), uint8(in.Status)),
	}
}

// clone copies r for a copy-on-write change (Set).
func (r *rec) clone() *rec {
	c := &rec{
		ha:     r.ha,
		prof:   r.prof,
		owner:  r.owner,
		reg:    r.reg,
		up:     r.up,
		dirty:  r.dirty,
		latest: r.latest,
	}
	c.renew.v.Store(r.renew.v.Load())
	return c
}

// instance returns a caller-owned copy. emptyMeta selects {} instead of null
// for no metadata.
func (r *rec) instance(env, appid, zone string, emptyMeta bool) Instance {
	p := r.prof.Value()
	return Instance{
		Region:          p.region,
		Zone:            zone,
		Env:             env,
		AppID:           appid,
		Hostname:        r.host(),
		Addrs:           r.addrList(),
		Version:         p.version,
		Metadata:        unpackMeta(p.meta, emptyMeta),
		Status:          uint32(p.status),
		RegTimestamp:    r.reg,
		UpTimestamp:     r.up,
		RenewTimestamp:  r.renew.ts(),
		DirtyTimestamp:  r.dirty,
		LatestTimestamp: r.latest,
	}
}

func (r *rec) isUp() bool { return r.statusOf() == StatusUp }
