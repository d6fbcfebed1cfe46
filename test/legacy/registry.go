package legacy

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Result codes of the original (kratos ecode).
const (
	codeOK          = 0
	codeNotModified = -304
	codeRequestErr  = -400
	codeNothing     = -404
	codeConflict    = -409
	codeServerErr   = -500
)

type appKey struct{ env, appid string }

// app is all instances of one (appid, env): zone -> hostname -> instance, plus
// the app latest_timestamp clients see.
type app struct {
	zones  map[string]map[string]*Instance
	latest int64
}

// waiter is one held poll. Every request gets its own (D1 not reproduced) and
// is armed under the registry lock together with the "unchanged" check (D2
// not reproduced).
type waiter struct {
	env  string
	zone string
	keys []appKey
	ch   chan map[string]*InstanceInfo // capacity 1: a request answers once
}

// guard is the self-preservation counter set of section 6.3.
type guard struct {
	expPerMin    int64
	expThreshold int64
	facInMin     int64
	facLastMin   int64
}

func (g *guard) setExp(instances int64) {
	g.expPerMin = instances * 2
	g.expThreshold = int64(float64(g.expPerMin) * 0.85)
}

func (g *guard) incrExp() {
	g.expPerMin += 2
	g.expThreshold = int64(float64(g.expPerMin) * 0.85)
}

func (g *guard) decrExp() {
	if g.expPerMin > 0 {
		g.expPerMin -= 2
		g.expThreshold = int64(float64(g.expPerMin) * 0.85)
	}
}

// protected: fewer renews in the last window than the threshold.
func (g *guard) protected() bool { return g.facLastMin < g.expThreshold }

// registry holds everything under one lock: it is a test fake, and one lock
// makes check-and-wait trivially atomic.
type registry struct {
	mu      sync.Mutex
	apps    map[appKey]*app
	waiters map[appKey]map[*waiter]struct{}
	guard   guard
	scans   int64
	evicted int64
}

func newRegistry() *registry {
	return &registry{apps: map[appKey]*app{}, waiters: map[appKey]map[*waiter]struct{}{}}
}

func nowNano() int64 { return time.Now().UnixNano() }

// advance is the original's "insure increase" rule.
func advance(prev, ts int64) int64 {
	if ts <= prev {
		return prev + 1
	}
	return ts
}

// register stores ins (which the caller hands over). The app latest is
// advanced from ins.LatestTimestamp even when the stored record wins on
// dirty_timestamp, and pollers are woken in every case, as in the original.
func (r *registry) register(ins *Instance) (isNew bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := appKey{ins.Env, ins.AppID}
	a := r.apps[k]
	if a == nil {
		a = &app{zones: map[string]map[string]*Instance{}}
		r.apps[k] = a
	}
	zm := a.zones[ins.Zone]
	if zm == nil {
		zm = map[string]*Instance{}
		a.zones[ins.Zone] = zm
	}
	a.latest = advance(a.latest, ins.LatestTimestamp)
	old, ok := zm[ins.Hostname]
	if ok {
		ins.UpTimestamp = old.UpTimestamp
		if ins.DirtyTimestamp < old.DirtyTimestamp {
			ins = old
		}
	}
	zm[ins.Hostname] = ins
	if !ok {
		r.guard.incrExp()
	}
	r.broadcastLocked(k)
	return !ok
}

// renew stamps renew_timestamp. zoneKnown distinguishes the original's two
// -404 data forms: null (no such app/zone) and a zero-valued instance (zone
// present, hostname absent).
func (r *registry) renew(env, appid, zone, hostname string) (ins *Instance, ok, zoneKnown bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.apps[appKey{env, appid}]
	if a == nil || a.zones[zone] == nil {
		return nil, false, false
	}
	i := a.zones[zone][hostname]
	if i == nil {
		return &Instance{}, false, true
	}
	i.RenewTimestamp = nowNano()
	r.guard.facInMin++
	return i.plainCopy(), true, true
}

// cancel removes an instance; latest is the cancel's latest_timestamp (0 from
// clients, "now" for evictions). The returned copy carries that value as its
// latest_timestamp, which is what the original forwards.
func (r *registry) cancel(env, appid, zone, hostname string, latest int64) (*Instance, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelLocked(env, appid, zone, hostname, latest)
}

func (r *registry) cancelLocked(env, appid, zone, hostname string, latest int64) (*Instance, bool) {
	k := appKey{env, appid}
	a := r.apps[k]
	if a == nil || a.zones[zone] == nil {
		return nil, false
	}
	zm := a.zones[zone]
	i := zm[hostname]
	if i == nil {
		return nil, false
	}
	delete(zm, hostname)
	i.LatestTimestamp = latest
	a.latest = advance(a.latest, latest)
	if len(zm) == 0 {
		delete(a.zones, zone)
	}
	if len(a.zones) == 0 {
		delete(r.apps, k)
	}
	r.broadcastLocked(k)
	return i.plainCopy(), true
}

func (r *registry) decrExp() {
	r.mu.Lock()
	r.guard.decrExp()
	r.mu.Unlock()
}

// setArgs is a parsed /discovery/set.
type setArgs struct {
	region, zone, env, appid string
	hostnames                []string
	statuses                 []int64
	metadata                 []string
	setTimestamp             int64
}

// set reproduces D7: hostnames are applied one by one and the first bad one
// aborts with the earlier ones already changed; metadata is decoded into the
// existing map (merge). It reproduces D3: the app latest_timestamp is not
// advanced, but held polls are woken (with the unchanged timestamp).
func (r *registry) set(arg *setArgs) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := appKey{arg.env, arg.appid}
	a := r.apps[k]
	if a == nil || a.zones[arg.zone] == nil {
		return false
	}
	zm := a.zones[arg.zone]
	ok := false
	for idx, h := range arg.hostnames {
		dst := zm[h]
		if dst == nil {
			return false
		}
		ok = true
		if len(arg.statuses) != 0 {
			s := arg.statuses[idx]
			if s != int64(StatusUP) && s != int64(StatusWaiting) {
				return false
			}
			dst.Status = uint32(s)
			if dst.Status == StatusUP {
				dst.UpTimestamp = arg.setTimestamp
			}
		}
		if len(arg.metadata) != 0 {
			if err := json.Unmarshal([]byte(arg.metadata[idx]), &dst.Metadata); err != nil {
				return false
			}
		}
		dst.LatestTimestamp = arg.setTimestamp
		dst.DirtyTimestamp = arg.setTimestamp
	}
	if ok {
		r.broadcastLocked(k)
	}
	return ok
}

// fetch is the original's InstanceInfo lookup. Order matters: an unknown app
// is -404, then "latest >= app latest" is -304 (even when the zone is
// missing), then a missing zone is -404 with an empty info.
func (r *registry) fetch(zone, env, appid string, latest int64, status uint32) (*InstanceInfo, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetchLocked(zone, env, appid, latest, status)
}

func (r *registry) fetchLocked(zone, env, appid string, latest int64, status uint32) (*InstanceInfo, int) {
	a := r.apps[appKey{env, appid}]
	if a == nil {
		return nil, codeNothing
	}
	if latest >= a.latest {
		return nil, codeNotModified
	}
	info := &InstanceInfo{Instances: map[string][]*Instance{}, LatestTimestamp: a.latest}
	found := false
	for z, zm := range a.zones {
		if zone != "" && z != zone {
			continue
		}
		found = true
		list := make([]*Instance, 0, len(zm))
		for _, i := range zm {
			if status&i.Status > 0 {
				list = append(list, i.readCopy())
			}
		}
		slices.SortFunc(list, func(x, y *Instance) int { return cmpStr(x.Hostname, y.Hostname) })
		info.Instances[z] = list
	}
	if !found {
		return info, codeNothing
	}
	return info, codeOK
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fetchAll is appid -> instances of every env and zone, metadata kept null
// when never set.
func (r *registry) fetchAll() map[string][]*Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]*Instance{}
	for k, a := range r.apps {
		for _, zm := range a.zones {
			for _, i := range zm {
				out[k.appid] = append(out[k.appid], i.plainCopy())
			}
		}
	}
	for _, l := range out {
		slices.SortFunc(l, func(x, y *Instance) int {
			if c := cmpStr(x.Env, y.Env); c != 0 {
				return c
			}
			if c := cmpStr(x.Zone, y.Zone); c != 0 {
				return c
			}
			return cmpStr(x.Hostname, y.Hostname)
		})
	}
	return out
}

// polls is the original's Polls: changed appids answer at once; otherwise a
// waiter is armed on every requested appid, missing ones included.
func (r *registry) polls(env, zone string, appids []string, latests []int64) (changed map[string]*InstanceInfo, miss []string, w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed = map[string]*InstanceInfo{}
	for idx, id := range appids {
		info, code := r.fetchLocked(zone, env, id, latests[idx], StatusUP)
		switch code {
		case codeNothing:
			miss = append(miss, id)
		case codeOK:
			changed[id] = info
		}
	}
	if len(changed) > 0 {
		return changed, miss, nil
	}
	w = &waiter{env: env, zone: zone, ch: make(chan map[string]*InstanceInfo, 1)}
	for _, id := range appids {
		k := appKey{env, id}
		if slices.Contains(w.keys, k) {
			continue
		}
		w.keys = append(w.keys, k)
		ws := r.waiters[k]
		if ws == nil {
			ws = map[*waiter]struct{}{}
			r.waiters[k] = ws
		}
		ws[w] = struct{}{}
	}
	return nil, miss, w
}

// unwait drops a waiter from every appid it still watches.
func (r *registry) unwait(w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range w.keys {
		if ws := r.waiters[k]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(r.waiters, k)
			}
		}
	}
}

// broadcastLocked wakes every waiter of k with only that appid's fresh UP list
// under the waiter's zone filter. As in the original, all waiters of k are
// detached from k first; one whose fetch fails (app gone, zone missing) is not
// woken and just times out.
func (r *registry) broadcastLocked(k appKey) {
	ws := r.waiters[k]
	if ws == nil {
		return
	}
	delete(r.waiters, k)
	for w := range ws {
		info, code := r.fetchLocked(w.zone, k.env, k.appid, 0, StatusUP)
		if code != codeOK {
			continue
		}
		select {
		case w.ch <- map[string]*InstanceInfo{k.appid: info}:
		default:
		}
	}
}

// scan is one eviction tick (section 6.2): close the guard window, then evict
// up to size - floor(size*0.85) random candidates, locally only, without
// lowering the expected renews (D11).
func (r *registry) scan(evictAfter, ceiling time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scans++
	r.guard.facLastMin, r.guard.facInMin = r.guard.facInMin, 0
	protect := r.guard.protected()
	now := nowNano()
	var cands []*Instance
	size := 0
	for _, a := range r.apps {
		for _, zm := range a.zones {
			size += len(zm)
			for _, i := range zm {
				d := now - i.RenewTimestamp
				if (!protect && d > int64(evictAfter)) || d > int64(ceiling) {
					cands = append(cands, i)
				}
			}
		}
	}
	limit := size - int(float64(size)*0.85)
	n := min(len(cands), limit)
	for idx := 0; idx < n; idx++ {
		j := idx + rand.IntN(len(cands)-idx)
		cands[idx], cands[j] = cands[j], cands[idx]
		i := cands[idx]
		if _, ok := r.cancelLocked(i.Env, i.AppID, i.Zone, i.Hostname, nowNano()); ok {
			r.evicted++
		}
	}
}

// resetExp recomputes the expected renews from the instance count (every 15
// minutes in the original).
func (r *registry) resetExp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cnt := int64(0)
	for _, a := range r.apps {
		for _, zm := range a.zones {
			cnt += int64(len(zm))
		}
	}
	r.guard.setExp(cnt)
}

// Stats is a snapshot of the eviction and guard counters, for tests.
type Stats struct {
	Scans            int64 // completed eviction scans
	Evicted          int64 // instances removed by eviction
	ExpectedRenews   int64 // E of section 6.3
	Threshold        int64 // T = floor(E*0.85)
	LastWindowRenews int64 // R: renews counted in the previous window
	GuardProtected   bool  // R < T at the last look
	Instances        int   // total stored instances
}

func (r *registry) stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.apps {
		for _, zm := range a.zones {
			n += len(zm)
		}
	}
	return Stats{
		Scans: r.scans, Evicted: r.evicted, ExpectedRenews: r.guard.expPerMin, Threshold: r.guard.expThreshold,
		LastWindowRenews: r.guard.facLastMin, GuardProtected: r.guard.protected(), Instances: n,
	}
}

// snapshot returns copies of every stored instance (metadata nil-ness kept).
func (r *registry) snapshot() []Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Instance
	for _, a := range r.apps {
		for _, zm := range a.zones {
			for _, i := range zm {
				out = append(out, *i.plainCopy())
			}
		}
	}
	slices.SortFunc(out, func(x, y Instance) int {
		for _, c := range [...]int{cmpStr(x.Env, y.Env), cmpStr(x.AppID, y.AppID), cmpStr(x.Zone, y.Zone), cmpStr(x.Hostname, y.Hostname)} {
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return out
}

func (r *registry) lookup(env, appid, zone, hostname string) (Instance, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.apps[appKey{env, appid}]
	if a == nil {
		return Instance{}, false
	}
	i := a.zones[zone][hostname]
	if i == nil {
		return Instance{}, false
	}
	return *i.plainCopy(), true
}

func (r *registry) appLatest(env, appid string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.apps[appKey{env, appid}]
	if a == nil {
		return 0, false
	}
	return a.latest, true
}

// waiting counts the held requests watching (env, appid).
func (r *registry) waiting(env, appid string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters[appKey{env, appid}])
}
