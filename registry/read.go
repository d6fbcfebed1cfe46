package registry

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// zoneGroup is one zone's records captured under mu. Records are immutable
// (see rec), so a group may be turned into Instances after mu is released.
type zoneGroup struct {
	zone string
	recs []*rec
}

// capture collects the app's records through a zone filter ("" = all) and a
// status bit mask. Every zone of the filter appears, even if the mask leaves
// it empty (spec 3.4). Caller holds mu (read or write).
func (a *app) capture(zone string, mask uint32) []zoneGroup {
	groups := make([]zoneGroup, 0, len(a.zones))
	for _, b := range a.zones {
		if zone != "" && b.name != zone {
			continue
		}
		n := b.len()
		if mask == StatusUp {
			n = b.up
		}
		g := zoneGroup{zone: b.name, recs: make([]*rec, 0, n)}
		for rc := range b.recs() {
			if rc.statusOf()&mask != 0 {
				g.recs = append(g.recs, rc)
			}
		}
		groups = append(groups, g)
	}
	return groups
}

// buildInfo turns captured groups into an InstanceInfo with caller-owned
// copies, sorted by hostname, metadata {} when empty. Runs outside mu.
func buildInfo(env, appid string, groups []zoneGroup, latest int64) *InstanceInfo {
	total := 0
	for _, g := range groups {
		total += len(g.recs)
	}
	all := make([]Instance, total)
	ptrs := make([]*Instance, total)
	info := &InstanceInfo{Instances: make(map[string][]*Instance, len(groups)), LatestTimestamp: latest}
	i := 0
	for _, g := range groups {
		slices.SortFunc(g.recs, func(x, y *rec) int { return strings.Compare(x.host(), y.host()) })
		start := i
		for _, rc := range g.recs {
			all[i] = rc.instance(env, appid, g.zone, true)
			ptrs[i] = &all[i]
			i++
		}
		info.Instances[g.zone] = ptrs[start:i:i] // full slice expression: appends never alias the next zone
	}
	return info
}

// Fetch answers fetch (spec 4.6): unknown app → ErrNotFound; zone given and
// absent → ErrNotFound; otherwise instances filtered by the status bit mask,
// zones with no match present as empty slices.
//
// Instances are sorted by hostname, Metadata is never nil, Addrs never nil.
func (r *Registry) Fetch(env, appid, zone string, statusMask uint32) (*InstanceInfo, error) {
	r.mu.RLock()
	a := r.getApp(env, appid)
	if a == nil || a.count == 0 || (zone != "" && a.bucket(zone) == nil) {
		r.mu.RUnlock()
		return nil, ErrNotFound
	}
	groups := a.capture(zone, statusMask)
	latest, e, id := a.latest, a.env, a.id
	r.mu.RUnlock()
	return buildInfo(e, id, groups, latest), nil
}

// Exists reports whether (env, appid) has an instance, in zone when zone is
// not empty: what poll answers -404 for (spec 4.8.1). It copies nothing.
func (r *Registry) Exists(env, appid, zone string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a := r.getApp(env, appid)
	return a != nil && a.count > 0 && (zone == "" || a.bucket(zone) != nil)
}

// recRef points at a record with its location. Collected under mu, turned
// into copies after mu is released (records are immutable), so that copying
// the whole registry does not hold writers off.
type recRef struct {
	a    *app
	zone string
	rc   *rec
}

func (a *app) appendRefs(refs []recRef) []recRef {
	for _, b := range a.zones {
		for rc := range b.recs() {
			refs = append(refs, recRef{a, b.name, rc})
		}
	}
	return refs
}

func (a *app) appendTombs(ts []Tombstone) []Tombstone {
	for hk, at := range a.tombs {
		ts = append(ts, Tombstone{Key: Key{Env: a.env, AppID: a.id, Zone: hk.zone, Hostname: hk.host}, At: at})
	}
	return ts
}

func (ref recRef) instance() Instance { return ref.rc.instance(ref.a.env, ref.a.id, ref.zone, false) }

// FetchAll answers fetch/all: appid → instances of every env, zone, status.
//
// Each list is sorted by (env, zone, hostname); Metadata is nil when empty
// (spec 3.2.4 allows null here).
func (r *Registry) FetchAll() map[string][]*Instance {
	r.mu.RLock()
	refs := make([]recRef, 0, r.size)
	for _, es := range r.envs {
		for _, a := range es.apps {
			refs = a.appendRefs(refs)
		}
	}
	r.mu.RUnlock()
	all := make([]Instance, len(refs))
	out := make(map[string][]*Instance)
	for i, ref := range refs {
		all[i] = ref.instance()
		out[all[i].AppID] = append(out[all[i].AppID], &all[i])
	}
	for _, list := range out {
		slices.SortFunc(list, func(x, y *Instance) int {
			return cmp.Or(strings.Compare(x.Env, y.Env), strings.Compare(x.Zone, y.Zone), strings.Compare(x.Hostname, y.Hostname))
		})
	}
	return out
}

// AppIDs lists every appid that has an instance in some env, sorted once
// each (the order of a streamed fetch/all).
func (r *Registry) AppIDs() []string {
	r.mu.RLock()
	seen := make(map[string]struct{})
	for _, es := range r.envs {
		for id, a := range es.apps {
			if a.count > 0 {
				seen[id] = struct{}{}
			}
		}
	}
	r.mu.RUnlock()
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// AppInstances returns copies of appid's instances in every env, zone and
// status, sorted by (env, zone, hostname): one appid of fetch/all, so the
// answer can be streamed app by app instead of copying the registry.
func (r *Registry) AppInstances(appid string) []Instance {
	r.mu.RLock()
	var refs []recRef
	for _, es := range r.envs {
		if a := es.apps[appid]; a != nil {
			refs = a.appendRefs(refs)
		}
	}
	r.mu.RUnlock()
	out := make([]Instance, len(refs))
	for i, ref := range refs {
		out[i] = ref.instance()
	}
	slices.SortFunc(out, func(x, y Instance) int {
		return cmp.Or(strings.Compare(x.Env, y.Env), strings.Compare(x.Zone, y.Zone), strings.Compare(x.Hostname, y.Hostname))
	})
	return out
}

// Snapshot returns a copy of every instance and live tombstone.
//
// Tombstones live until a Scan finds them older than TombstoneTTL. Both
// lists are sorted by key (env, appid, zone, hostname).
func (r *Registry) Snapshot() Snapshot {
	r.mu.RLock()
	refs := make([]recRef, 0, r.size)
	tombs := make([]Tombstone, 0, r.tombs)
	for _, es := range r.envs {
		for _, a := range es.apps {
			refs = a.appendRefs(refs)
			tombs = a.appendTombs(tombs)
		}
	}
	r.mu.RUnlock()
	return makeSnapshot(refs, tombs)
}

func makeSnapshot(refs []recRef, tombs []Tombstone) Snapshot {
	// Sort the small refs, not the big copies.
	slices.SortFunc(refs, func(x, y recRef) int {
		if x.a != y.a {
			return cmp.Or(strings.Compare(x.a.env, y.a.env), strings.Compare(x.a.id, y.a.id))
		}
		return cmp.Or(strings.Compare(x.zone, y.zone), strings.Compare(x.rc.host(), y.rc.host()))
	})
	s := Snapshot{Instances: make([]Instance, len(refs)), Tombstones: tombs}
	if s.Tombstones == nil {
		s.Tombstones = []Tombstone{}
	}
	for i, ref := range refs {
		s.Instances[i] = ref.instance()
	}
	slices.SortFunc(s.Tombstones, func(x, y Tombstone) int { return compareKeys(x.Key, y.Key) })
	return s
}

func compareKeys(x, y Key) int {
	return cmp.Or(strings.Compare(x.Env, y.Env), strings.Compare(x.AppID, y.AppID),
		strings.Compare(x.Zone, y.Zone), strings.Compare(x.Hostname, y.Hostname))
}

// AppDigests returns, per app (including apps known only by tombstones), a
// hash over (key, dirty_timestamp) of its instances and tombstones. Two nodes
// with equal digests for an app hold the same versions of it. Renew
// timestamps do not enter the digest.
//
// The hash is deterministic across processes (FNV-1a per entry, mixed, then
// summed so map order does not matter).
func (r *Registry) AppDigests() map[AppKey]uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[AppKey]uint64)
	for _, es := range r.envs {
		for _, a := range es.apps {
			if a.count == 0 && len(a.tombs) == 0 {
				continue
			}
			var d uint64
			for _, b := range a.zones {
				for rc := range b.recs() {
					d += entryHash(b.name, rc.host(), 'i', rc.dirty)
				}
			}
			for hk, at := range a.tombs {
				d += entryHash(hk.zone, hk.host, 't', at)
			}
			out[AppKey{Env: a.env, AppID: a.id}] = d
		}
	}
	return out
}

func entryHash(zone, host string, kind byte, v int64) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(zone); i++ {
		h = (h ^ uint64(zone[i])) * prime
	}
	h *= prime // a 0 separator byte, so that ("ab", "c") and ("a", "bc") differ
	for i := 0; i < len(host); i++ {
		h = (h ^ uint64(host[i])) * prime
	}
	h *= prime // separator
	h = (h ^ uint64(kind)) * prime
	for i := range 8 {
		h = (h ^ uint64(byte(uint64(v)>>(8*i)))) * prime
	}
	// splitmix64 finalizer: spreads bits so that summing entries cannot cancel
	// structured differences.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// AppState returns the instances and tombstones of the given apps.
//
// Sorted like Snapshot; an app listed twice is reported once.
func (r *Registry) AppState(apps []AppKey) Snapshot {
	var refs []recRef
	var tombs []Tombstone
	seen := make(map[*app]bool, len(apps))
	r.mu.RLock()
	for _, k := range apps {
		if a := r.getApp(k.Env, k.AppID); a != nil && !seen[a] {
			seen[a] = true
			refs = a.appendRefs(refs)
			tombs = a.appendTombs(tombs)
		}
	}
	r.mu.RUnlock()
	return makeSnapshot(refs, tombs)
}

// Stats returns a point-in-time view for metrics.
//
// Instances and Apps list only envs holding at least one instance.
func (r *Registry) Stats() Stats {
	r.mu.RLock()
	s := Stats{
		Instances:      make(map[string]int, len(r.envs)),
		Apps:           make(map[string]int, len(r.envs)),
		Tombstones:     r.tombs,
		Protected:      r.protected,
		ExpectedRenews: r.expected.Load(),
		Full: struct{ Instances, Apps, Envs uint64 }{
			r.full[fullInstances].Load(), r.full[fullApps].Load(), r.full[fullEnvs].Load(),
		},
		Threshold:        r.threshold(r.expected.Load()),
		LastMinuteRenews: r.lastRenews,
		Evictions:        r.evictions,
	}
	for name, es := range r.envs {
		if es.instances > 0 {
			s.Instances[name] = es.instances
			s.Apps[name] = es.liveApps
		}
	}
	r.mu.RUnlock()
	r.wmu.Lock()
	s.Waiters = r.nWaiters
	r.wmu.Unlock()
	return s
}

// threshold is floor(e * ProtectThreshold), computed like the original
// (float product truncated).
func (r *Registry) threshold(e int64) int64 {
	return int64(math.Floor(float64(e) * r.cfg.ProtectThreshold))
}

// AppSummary counts one app's instances (the admin page's apps list).
type AppSummary struct {
	Env, AppID string
	// Zones: per zone, instances by status and those silent for longer
	// than the staleAfter given to AppSummaries.
	Zones map[string]ZoneCounts
	// Instances is the total; LatestTimestamp the app's.
	Instances       int
	LatestTimestamp int64
}

// ZoneCounts counts the instances of one app in one zone.
type ZoneCounts struct {
	Up, Waiting, Stale int
}

// AppSummaries counts the instances of every app of env ("" = all envs),
// by zone and status, with those whose last renew is older than
// staleAfter; sorted by (env, appid). It walks the registry under the read
// lock without copying instances.
func (r *Registry) AppSummaries(env string, staleAfter time.Duration) []AppSummary {
	now := r.now()
	r.mu.RLock()
	out := make([]AppSummary, 0, r.nApps)
	for name, es := range r.envs {
		if env != "" && name != env {
			continue
		}
		for id, a := range es.apps {
			if a.count == 0 {
				continue
			}
			s := AppSummary{Env: name, AppID: id, Instances: a.count, LatestTimestamp: a.latest, Zones: make(map[string]ZoneCounts, len(a.zones))}
			for _, b := range a.zones {
				var zc ZoneCounts
				for rc := range b.recs() {
					if rc.isUp() {
						zc.Up++
					} else {
						zc.Waiting++
					}
					if now-rc.renew.ts() > int64(staleAfter) {
						zc.Stale++
					}
				}
				s.Zones[b.name] = zc
			}
			out = append(out, s)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(x, y AppSummary) int {
		return cmp.Or(strings.Compare(x.Env, y.Env), strings.Compare(x.AppID, y.AppID))
	})
	return out
}
