package registry

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/discovery-go/discovery/api/wire"
)

// payload is one encoded InstanceInfo (spec 3.4) of one app version seen
// through one zone filter and one status mask: the answer of polls (UP only)
// and of fetch/fetchs. It is created under mu.RLock from immutable records
// and encoded at most once, outside mu, by whichever reader asks first; every
// other reader of that version, filter and mask gets the same bytes. A change
// of the app drops the app's payloads (app.cache = nil), so a payload is
// never served for a newer version than it was built for.
//
// renew_timestamp is not part of the version (a renew neither advances the
// app latest_timestamp nor wakes pollers), so a payload records the app's
// renew generation at capture: fetch, which must show the last heartbeat
// (C20), rebuilds a payload older than the last renew; polls accept it.
type payload struct {
	zone   string
	mask   uint32 // canonical: only statuses present in the filtered zones
	gen    uint64 // app.renewGen when the records were captured
	env    string
	appid  string
	latest int64
	groups []zoneGroup // consumed by the encode
	used   atomic.Bool // served since the last Scan (unused payloads are dropped)

	once sync.Once
	b    []byte
}

// statusesIn is the set (bit mask) of statuses the app has through a zone
// filter. Masks are reduced to it, so that e.g. status=3 of an app whose
// instances are all UP shares the UP-only payload of the pollers.
func (a *app) statusesIn(zone string) uint32 {
	up, n := a.up, a.count
	if zone != "" {
		b := a.bucket(zone)
		if b == nil {
			return 0
		}
		up, n = b.up, b.len()
	}
	var m uint32
	if up > 0 {
		m |= StatusUp
	}
	if n > up {
		m |= StatusWaiting
	}
	return m
}

// payloadFor returns the app's payload for a zone filter and status mask,
// creating it if needed. With fresh, a payload captured before the latest
// renew of the app is replaced. Caller holds mu.RLock.
//
// The cache is an immutable slice behind an atomic pointer, so the common
// case (the payload exists: every poller woken by one change but the first)
// takes no lock; cmu only serialises creations.
func (a *app) payloadFor(zone string, mask uint32, fresh bool) *payload {
	mask &= a.statusesIn(zone)
	// Loaded before the records are captured: a renew that lands in between
	// only makes the payload fresher than its gen says.
	gen := a.renewGen.Load()
	if p := a.cachedPayload(zone, mask, fresh, gen); p != nil {
		return p
	}
	a.cmu.Lock()
	defer a.cmu.Unlock()
	if p := a.cachedPayload(zone, mask, fresh, gen); p != nil {
		return p // created meanwhile
	}
	np := &payload{zone: zone, mask: mask, gen: gen, env: a.env, appid: a.id, latest: a.latest,
		groups: a.capture(zone, mask)}
	np.used.Store(true)
	var next []*payload
	if old := a.cache.Load(); old != nil {
		next = make([]*payload, 0, len(*old)+1)
		for _, p := range *old {
			if p.zone != zone || p.mask != mask { // drop the stale one np replaces
				next = append(next, p)
			}
		}
	}
	next = append(next, np)
	a.cache.Store(&next)
	return np
}

func (a *app) cachedPayload(zone string, mask uint32, fresh bool, gen uint64) *payload {
	c := a.cache.Load()
	if c == nil {
		return nil
	}
	for _, p := range *c {
		if p.zone == zone && p.mask == mask && (!fresh || p.gen >= gen) {
			if !p.used.Load() { // avoid writing a shared cache line on every hit
				p.used.Store(true)
			}
			return p
		}
	}
	return nil
}

// trimCache drops payloads nobody asked for since the previous call, so
// encoded answers of quiet apps do not stay in memory (they are about as big
// as the instances themselves). Caller holds mu.Lock.
func (a *app) trimCache() {
	c := a.cache.Load()
	if c == nil {
		return
	}
	var kept []*payload
	for _, p := range *c {
		if p.used.Swap(false) {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		a.cache.Store(nil)
		return
	}
	a.cache.Store(&kept)
}

func (p *payload) bytes(r *Registry) []byte {
	p.once.Do(func() {
		b := appendInfo(nil, p.env, p.appid, p.groups, p.latest)
		if cap(b)-len(b) > len(b)/32 {
			// Cached until the next change: do not keep the estimate's slack.
			b = append(make([]byte, 0, len(b)), b...)
		}
		p.b = b
		p.groups = nil
		r.encodes.Add(1)
	})
	return p.b
}

// FetchEncoded answers fetch and fetchs (spec 4.6, 4.7): for each appid of
// env that has an instance (in zone, when zone is not empty), its
// InstanceInfo filtered by the status bit mask, encoded as JSON exactly like
// encoding/json encodes the InstanceInfo that Fetch returns. Unknown appids
// (or lacking the zone) are left out; a repeated appid is answered once; the
// order is that of appids.
//
// The bytes are shared by every reader of the same (app version, zone
// filter, mask) and MUST NOT be modified; they are encoded once per change
// (and after a renew, since renew_timestamp is part of the answer).
func (r *Registry) FetchEncoded(env, zone string, statusMask uint32, appids []string) []AppPayload {
	ps := make([]*payload, 0, len(appids))
	out := make([]AppPayload, 0, len(appids))
	var seen map[string]struct{}
	r.mu.RLock()
	if es := r.envs[env]; es != nil {
		for _, id := range appids {
			a := es.apps[id]
			if a == nil || a.count == 0 || (zone != "" && a.bucket(zone) == nil) {
				continue
			}
			if dupPayload(out, &seen, id) {
				continue
			}
			out = append(out, AppPayload{AppID: id})
			ps = append(ps, a.payloadFor(zone, statusMask, true))
		}
	}
	r.mu.RUnlock()
	for i, p := range ps {
		out[i].JSON = p.bytes(r)
	}
	return out
}

// dupPayload reports whether id is already answered; long lists switch to
// a set.
func dupPayload(out []AppPayload, seen *map[string]struct{}, id string) bool {
	const linear = 16
	if len(out) < linear {
		for _, x := range out {
			if x.AppID == id {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]struct{}, 2*linear)
		for _, x := range out {
			(*seen)[x.AppID] = struct{}{}
		}
	}
	if _, ok := (*seen)[id]; ok {
		return true
	}
	(*seen)[id] = struct{}{}
	return false
}

// appendInfo encodes captured groups as the InstanceInfo JSON, byte for
// byte what encoding/json makes of buildInfo's result (zones and metadata
// keys sorted, instances sorted by hostname, metadata {} when empty) but
// without building the copies. Runs outside mu.
func appendInfo(b []byte, env, appid string, groups []zoneGroup, latest int64) []byte {
	if b == nil {
		n := 64
		for _, g := range groups {
			n += len(g.zone) + 8
			for _, rc := range g.recs {
				n += rc.jsonSizeHint(len(env) + len(appid) + len(g.zone))
			}
		}
		b = make([]byte, 0, n)
	}
	slices.SortFunc(groups, func(x, y zoneGroup) int { return strings.Compare(x.zone, y.zone) })
	b = append(b, `{"instances":{`...)
	for i, g := range groups {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendString(b, g.zone)
		b = append(b, ':', '[')
		slices.SortFunc(g.recs, func(x, y *rec) int { return strings.Compare(x.host(), y.host()) })
		for j, rc := range g.recs {
			if j > 0 {
				b = append(b, ',')
			}
			b = rc.appendJSON(b, env, appid, g.zone)
		}
		b = append(b, ']')
	}
	b = append(b, `},"latest_timestamp":`...)
	b = strconv.AppendInt(b, latest, 10)
	return append(b, '}')
}

// jsonSizeHint is appendJSON's length when nothing needs escaping and the
// timestamps have 19 digits (2001-2286), given the length of env, appid and
// zone together: 196 bytes of keys and punctuation, the status digit, five
// timestamps, the strings and their quotes and separators.
func (r *rec) jsonSizeHint(keyLen int) int {
	p := r.prof.Value()
	addrs, count := r.addrsLen()
	n := 196 + 1 + 5*19 + keyLen + len(r.host()) + addrs + 3*count + len(p.region) + len(p.version)
	for s := p.meta; len(s) > 0; {
		var k, v string
		k, s = nextPacked(s)
		v, s = nextPacked(s)
		n += len(k) + len(v) + 6
	}
	return n
}

// appendJSON encodes the record as an Instance (14 keys in struct order,
// metadata {} when empty), like encoding/json does.
func (r *rec) appendJSON(b []byte, env, appid, zone string) []byte {
	p := r.prof.Value()
	b = append(b, `{"region":`...)
	b = wire.AppendString(b, p.region)
	b = append(b, `,"zone":`...)
	b = wire.AppendString(b, zone)
	b = append(b, `,"env":`...)
	b = wire.AppendString(b, env)
	b = append(b, `,"appid":`...)
	b = wire.AppendString(b, appid)
	b = append(b, `,"hostname":`...)
	b = wire.AppendString(b, r.host())
	b = append(b, `,"addrs":[`...)
	first := true
	for a, ref := range r.packedAddrs {
		if !first {
			b = append(b, ',')
		}
		first = false
		// Unpacked in a scratch buffer on the stack (addrs are short), not
		// as a string of its own.
		var scratch [96]byte
		b = wire.AppendString(b, appendAddr(scratch[:0], a, ref))
	}
	b = append(b, `],"version":`...)
	b = wire.AppendString(b, p.version)
	b = append(b, `,"metadata":{`...)
	if p.meta != "" {
		// Packed pairs are sorted by key, the order encoding/json uses.
		s := p.meta
		for first := true; len(s) > 0; first = false {
			var k, v string
			k, s = nextPacked(s)
			v, s = nextPacked(s)
			if !first {
				b = append(b, ',')
			}
			b = wire.AppendString(b, k)
			b = append(b, ':')
			b = wire.AppendString(b, v)
		}
	}
	b = append(b, `},"status":`...)
	b = strconv.AppendUint(b, uint64(r.statusOf()), 10)
	b = append(b, `,"reg_timestamp":`...)
	b = strconv.AppendInt(b, r.reg, 10)
	b = append(b, `,"up_timestamp":`...)
	b = strconv.AppendInt(b, r.up, 10)
	b = append(b, `,"renew_timestamp":`...)
	b = strconv.AppendInt(b, r.renew.ts(), 10)
	b = append(b, `,"dirty_timestamp":`...)
	b = strconv.AppendInt(b, r.dirty, 10)
	b = append(b, `,"latest_timestamp":`...)
	b = strconv.AppendInt(b, r.latest, 10)
	return append(b, '}')
}
