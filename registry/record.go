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
// share one allocation with the owner, packed (packHostAddrs): the owner
// is not interned, since every pod registers from its own address and an
// interned string per address cost 220 bytes per instance. The renew
// timestamp and the "counted" flag share one atomic word. The struct is 64
// bytes, a size class of its own: a field more costs 16 bytes per instance.
//
// A rec is immutable once published in the tree, except its renew word
// (atomic): every content change (register, set, import) installs a new
// rec. So readers may hold *rec pointers after releasing the registry lock
// (the poll payload is encoded outside the lock from such pointers), and
// Renew only needs the read lock.
type rec struct {
	ha     string                 // hostname, addrs and owner (packHostAddrs)
	prof   unique.Handle[profile] // region, version, packed metadata, status
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

// ha is the hostname, then every addr preceded by a NUL, then the owner
// when it is known: its 4 (IPv4) or 16 address bytes and a tag byte.
// Validation refuses control characters in hostnames and addrs, so the
// bytes below 0x20 are free for this: an addr's scheme grpc://, http:// or
// https:// is one byte, and an addr after the first whose host is the
// first addr's host (a kratos pod's grpc and http endpoints) holds one byte
// for it. That makes a kratos instance's ha 21 to 26 bytes shorter than its
// plain text, more than the owner adds: with the owner out of the struct,
// an instance is usually two size classes (32 bytes) smaller.
const (
	tokGRPC    = 0x01
	tokHTTP    = 0x02
	tokHTTPS   = 0x03
	tokHost    = 0x04 // the first addr's host
	tagOwner4  = 0x1e
	tagOwner16 = 0x1f
)

var schemeOfTok = [...]string{tokGRPC: "grpc://", tokHTTP: "http://", tokHTTPS: "https://"}

// packHostAddrs builds ha (above) in one allocation of its exact size,
// detached from the request buffer the strings were parsed from.
func packHostAddrs(host string, addrs []string, owner ownerIP) string {
	var scratch [160]byte // a kratos instance fits; a larger one grows on the heap
	b := append(scratch[:0], host...)
	ref := ""
	for i, a := range addrs {
		b = append(b, 0)
		scheme, rest := cutScheme(a)
		if tok := tokOfScheme(scheme); tok != 0 {
			b = append(b, tok)
		} else {
			b = append(b, scheme...)
		}
		switch {
		case i == 0:
			if scheme != "" {
				ref = hostOf(rest)
			}
		case ref != "" && strings.HasPrefix(rest, ref) && hostOf(rest) == ref:
			b = append(b, tokHost)
			rest = rest[len(ref):]
		}
		b = append(b, rest...)
	}
	return string(appendOwner(b, owner))
}

func appendOwner(b []byte, o ownerIP) []byte {
	switch {
	case !o.known():
		return b
	case netip.AddrFrom16(o).Is4In6():
		return append(append(b, o[12:]...), tagOwner4)
	default:
		return append(append(b, o[:]...), tagOwner16)
	}
}

// cutScheme splits an addr after its "://"; scheme is "" when it has none.
func cutScheme(a string) (scheme, rest string) {
	if i := strings.Index(a, "://"); i >= 0 {
		return a[:i+3], a[i+3:]
	}
	return "", a
}

func tokOfScheme(scheme string) byte {
	switch scheme {
	case "grpc://":
		return tokGRPC
	case "http://":
		return tokHTTP
	case "https://":
		return tokHTTPS
	}
	return 0
}

// hostOf is the host of what follows an addr's "://": up to the first '/',
// without the port after the last ':'. Packing and unpacking apply the
// same rule to the same bytes, so any answer is consistent.
func hostOf(rest string) string {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// body is ha without the owner. The length checks only matter for a
// record built from unvalidated text, which nothing stores.
func (r *rec) body() string {
	s := r.ha
	if n := len(s); n > 0 {
		switch {
		case s[n-1] == tagOwner4 && n >= 5:
			return s[:n-5]
		case s[n-1] == tagOwner16 && n >= 17:
			return s[:n-17]
		}
	}
	return s
}

// owner is the client address that registered the record: the bytes
// body leaves out, less the tag.
func (r *rec) owner() (o ownerIP) {
	s := r.ha[len(r.body()):]
	switch len(s) {
	case 5:
		return netip.AddrFrom4([4]byte([]byte(s[:4]))).As16()
	case 17:
		copy(o[:], s[:16])
	}
	return o
}

// withOwner is r's ha with owner o instead of its own.
func (r *rec) withOwner(o ownerIP) string {
	var scratch [160]byte
	return string(appendOwner(append(scratch[:0], r.body()...), o))
}

// host is the hostname: ha up to its first NUL.
func (r *rec) host() string {
	s := r.body()
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// hasHost reports whether the record's hostname is h, without finding the
// hostname's end first (the hash table compares on every probe). h holds
// no NUL: zoneBucket.get refuses such keys, which would match by prefix.
func (r *rec) hasHost(h string) bool {
	s := r.body()
	return strings.HasPrefix(s, h) && (len(s) == len(h) || s[len(h)] == 0)
}

func (r *rec) statusOf() uint32 { return uint32(r.prof.Value().status) }

// packedAddrs iterates the record's addrs as packed, with the host that
// tokHost stands for (appendAddr unpacks one).
func (r *rec) packedAddrs(yield func(packed, ref string) bool) {
	s := r.body()
	s = s[len(r.host()):]
	ref := ""
	for first := true; len(s) > 0; first = false {
		s = s[1:] // the NUL before each addr
		a := s
		if i := strings.IndexByte(s, 0); i >= 0 {
			a, s = s[:i], s[i:]
		} else {
			s = ""
		}
		if first {
			ref = refHost(a)
		}
		if !yield(a, ref) {
			return
		}
	}
}

// refHost is the host of the first addr, packed as a.
func refHost(a string) string {
	if scheme, rest, _, _ := addrParts(a, ""); scheme != "" {
		return hostOf(rest) // a first addr holds no tokHost
	}
	if scheme, rest := cutScheme(a); scheme != "" {
		return hostOf(rest)
	}
	return ""
}

// addrParts splits the addr packed as a into the parts it reads as, in
// order; ref is the host tokHost stands for.
func addrParts(a, ref string) (scheme, head, host, tail string) {
	if len(a) > 0 && int(a[0]) < len(schemeOfTok) {
		if scheme = schemeOfTok[a[0]]; scheme != "" {
			a = a[1:]
		}
	}
	if i := strings.IndexByte(a, tokHost); i >= 0 {
		return scheme, a[:i], ref, a[i+1:]
	}
	return scheme, a, "", ""
}

func addrLen(a, ref string) int {
	s, h, x, t := addrParts(a, ref)
	return len(s) + len(h) + len(x) + len(t)
}

// appendAddr appends the addr packed as a.
func appendAddr(dst []byte, a, ref string) []byte {
	s, h, x, t := addrParts(a, ref)
	dst = append(dst, s...)
	dst = append(dst, h...)
	dst = append(dst, x...)
	return append(dst, t...)
}

// addrsLen is the length of the record's addrs together, and their count.
func (r *rec) addrsLen() (n, count int) {
	for a, ref := range r.packedAddrs {
		n += addrLen(a, ref)
		count++
	}
	return n, count
}

// addrList unpacks the addrs into one string, which they share: two
// allocations (a list of plain substrings of ha had one or two).
func (r *rec) addrList() []string {
	var scratch [160]byte
	var ends [8]int // a larger list grows on the heap
	buf, cut := scratch[:0], ends[:0]
	for a, ref := range r.packedAddrs {
		buf = appendAddr(buf, a, ref)
		cut = append(cut, len(buf))
	}
	if len(cut) == 0 {
		return nil
	}
	all := string(buf)
	out := make([]string, len(cut))
	start := 0
	for i, end := range cut {
		out[i] = all[start:end]
		start = end
	}
	return out
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
func newRec(in *Instance, owner ownerIP) *rec {
	return &rec{
		ha:   packHostAddrs(in.Hostname, in.Addrs, owner),
		prof: makeProfile(in.Region, in.Version, packMeta(in.Metadata), uint8(in.Status)),
	}
}

// clone copies r for a copy-on-write change (Set).
func (r *rec) clone() *rec {
	c := &rec{
		ha:     r.ha,
		prof:   r.prof,
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
