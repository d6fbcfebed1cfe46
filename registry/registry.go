package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry is the in-memory registry. Create it with New.
//
// Locking: one RWMutex (mu) guards the tree and the guard numbers. Writes
// that change an app (register, cancel, set, import, eviction) take it
// exclusively; Renew only takes it shared (renew_timestamp is atomic, see
// rec). The waiter index has its own mutex (wmu), always taken after mu, so
// Poll can check and arm under mu.RLock while writers detach the waiters to
// wake under mu.Lock: no change can fall between a poll's check and its
// arming (spec 5.4.3). The signals are sent after mu is released (unlock).
// Answers are encoded outside mu (see payload).
type Registry struct {
	cfg   Config
	clock Clock
	log   *slog.Logger

	mu    sync.RWMutex
	envs  map[string]*envState
	size  int // instances in all envs
	tombs int // live tombstones in all apps

	nApps int // app structures in all envs (live or keeping tombstones)

	// Self-preservation guard (mu, except the atomics, which Renew changes
	// under mu.RLock). A key counts toward the expected renews only from
	// its first renew: registrations that never renew cannot switch
	// self-preservation on.
	expected   atomic.Int64 // expected renews per minute
	counted    atomic.Int64 // instances that renewed at least once
	lastReset  int64        // ns of the last recompute of expected
	protected  bool
	lastRenews int64 // renews counted in the last closed window
	evictions  uint64

	renews atomic.Int64 // renews in the current window (counted under mu.RLock)

	full [3]atomic.Uint64 // writes refused by max_instances, max_apps, max_envs

	wmu      sync.Mutex
	waiters  map[AppKey]*waitList
	nWaiters int
	pending  []*Waiter // waiters woken under mu.Lock, signalled by unlock

	encodes atomic.Uint64 // poll payload encodings (tests prove sharing with it)

	// Any change of any app (Changes): version counts them; next is
	// closed by the unlock after a change, when someone waits.
	version  atomic.Uint64
	fire     bool       // a change under the current mu.Lock (mu)
	nextMu   sync.Mutex // guards next
	nextChan chan struct{}
}

type envState struct {
	name      string
	apps      map[string]*app
	instances int
	liveApps  int // apps with at least one instance
}

// app is one (env, appid). It outlives its last instance for TombstoneTTL
// (and while it holds tombstones) so its latest_timestamp stays strictly
// increasing even if the clock steps back; on the wire an app without
// instances does not exist (spec 3.3.4).
type app struct {
	es      *envState
	env, id string
	zones   []*zoneBucket // few per app; linear search beats a map
	count   int           // instances
	up      int           // UP instances
	latest  int64
	emptyAt int64             // when count dropped to 0 (cleanup by Scan)
	tombs   map[hostKey]int64 // cancel time per key; nil when none

	cmu   sync.Mutex                 // serialises cache creations when mu is only read-locked
	cache atomic.Pointer[[]*payload] // encoded answers for the current latest, one per (zone filter, status mask); immutable slice
	// renewGen counts renews of the app's instances (see payload).
	renewGen atomic.Uint64
}

type hostKey struct{ zone, host string }

// New builds a registry. clock nil means the system clock; logger nil means
// slog.DiscardHandler.
func New(cfg Config, clock Clock, logger *slog.Logger) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	if clock == nil {
		clock = SystemClock{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		cfg:     cfg,
		clock:   clock,
		log:     logger,
		envs:    make(map[string]*envState),
		waiters: make(map[AppKey]*waitList),
	}
	r.lastReset = r.now()
	return r, nil
}

func (r *Registry) now() int64 { return r.clock.Now().UnixNano() }

// clampFuture bounds how far ahead of the local clock a peer-supplied value
// may push an app latest_timestamp (latestHint, imported latest,
// set_timestamp, cancel at): one bogus value near MaxInt64 would make the
// counter overflow and stop increasing.
func (r *Registry) clampFuture(t, now int64) int64 { return min(t, now+int64(r.cfg.MaxClockSkew)) }

// tooFarAhead refuses a version timestamp (dirty_timestamp, set_timestamp,
// cancel time) more than max_clock_skew ahead of the clock: such a value
// outranks every later write of the real owner, and a tombstone at it
// could block the key until the clock catches up.
func (r *Registry) tooFarAhead(field string, t int64) error {
	if t > r.now()+int64(r.cfg.MaxClockSkew) {
		return invalid(field, "%d is more than %s ahead of this node's clock", t, r.cfg.MaxClockSkew)
	}
	return nil
}

func (r *Registry) getApp(env, id string) *app {
	es := r.envs[env]
	if es == nil {
		return nil
	}
	return es.apps[id]
}

// Indexes of Registry.full.
const (
	fullInstances = iota
	fullApps
	fullEnvs
)

// ensureApp returns the app, creating it (and its env) within max_apps and
// max_envs; ErrFull beyond.
func (r *Registry) ensureApp(env, id string) (*app, error) {
	es := r.envs[env]
	if es == nil {
		if len(r.envs) >= r.cfg.MaxEnvs {
			r.full[fullEnvs].Add(1)
			return nil, fmt.Errorf("%w: env %q would exceed max_envs (%d)", ErrFull, trunc(env), r.cfg.MaxEnvs)
		}
		es = &envState{name: strings.Clone(env), apps: make(map[string]*app)}
		r.envs[es.name] = es
	}
	a := es.apps[id]
	if a == nil {
		if r.nApps >= r.cfg.MaxApps {
			r.full[fullApps].Add(1)
			if len(es.apps) == 0 {
				delete(r.envs, es.name)
			}
			return nil, fmt.Errorf("%w: appid %q would exceed max_apps (%d)", ErrFull, trunc(id), r.cfg.MaxApps)
		}
		a = &app{es: es, env: es.name, id: strings.Clone(id), emptyAt: r.now()}
		es.apps[a.id] = a
		r.nApps++
	}
	return a, nil
}

// dropApp removes an app (and its env when that is left empty) that holds
// no instance and no tombstone. Caller holds mu.
func (r *Registry) dropApp(a *app) {
	if a.count != 0 || len(a.tombs) != 0 {
		return
	}
	delete(a.es.apps, a.id)
	r.nApps--
	if len(a.es.apps) == 0 {
		delete(r.envs, a.es.name)
	}
}

// roomFor refuses a new instance beyond max_instances.
func (r *Registry) roomFor() error {
	if r.size >= r.cfg.MaxInstances {
		r.full[fullInstances].Add(1)
		return fmt.Errorf("%w: max_instances (%d) reached", ErrFull, r.cfg.MaxInstances)
	}
	return nil
}

// find locates k's record (nil parts when absent). Caller holds mu.
func (r *Registry) find(k Key) (*app, *zoneBucket, *rec) {
	a := r.getApp(k.Env, k.AppID)
	if a == nil {
		return nil, nil, nil
	}
	b, rc := a.lookup(k.Zone, k.Hostname)
	return a, b, rc
}

func (a *app) bucket(zone string) *zoneBucket {
	for _, b := range a.zones {
		if b.name == zone {
			return b
		}
	}
	return nil
}

func (a *app) lookup(zone, host string) (*zoneBucket, *rec) {
	b := a.bucket(zone)
	if b == nil {
		return nil, nil
	}
	return b, b.get(host)
}

// upIn counts UP instances visible through a zone filter ("" = all zones).
func (a *app) upIn(zone string) int {
	if zone == "" {
		return a.up
	}
	if b := a.bucket(zone); b != nil {
		return b.up
	}
	return 0
}

// advance moves the app latest_timestamp to max(t, prev+1) (spec 3.3).
func (a *app) advance(t int64) {
	if t <= a.latest {
		t = a.latest + 1
	}
	a.latest = t
}

// put installs nr under zone, replacing the record with its hostname.
func (r *Registry) put(a *app, zone string, nr *rec) (old *rec) {
	b := a.bucket(zone)
	if b == nil {
		b = &zoneBucket{name: strings.Clone(zone)}
		a.zones = append(a.zones, b)
	}
	old = b.set(nr)
	if old != nil {
		// Same key: it keeps its standing with the guard and its owner.
		nr.renew.init(nr.renew.ts(), old.renew.counted())
		if !nr.owner().known() && old.owner().known() {
			// Rare (a copy without an owner over one with); nr is not
			// yet visible to any reader.
			nr.ha = nr.withOwner(old.owner())
		}
		if old.isUp() {
			b.up--
			a.up--
		}
	} else {
		a.count++
		a.es.instances++
		r.size++
		if a.count == 1 {
			a.es.liveApps++
		}
	}
	if nr.isUp() {
		b.up++
		a.up++
	}
	return old
}

// remove deletes rc from bucket b, dropping an empty zone (spec 3.3.4), and
// lowers the expected renews by 2 when rc counted toward them.
func (r *Registry) remove(a *app, b *zoneBucket, rc *rec, now int64) {
	if rc.renew.counted() {
		r.counted.Add(-1)
		r.lowerExpected()
	}
	b.del(rc.host())
	if rc.isUp() {
		b.up--
		a.up--
	}
	if b.len() == 0 {
		for i, z := range a.zones {
			if z == b {
				last := len(a.zones) - 1
				a.zones[i] = a.zones[last]
				a.zones[last] = nil
				a.zones = a.zones[:last]
				break
			}
		}
		if len(a.zones) == 0 {
			a.zones = nil
		}
	}
	a.count--
	a.es.instances--
	r.size--
	if a.count == 0 {
		a.es.liveApps--
		a.emptyAt = now
	}
}

func (r *Registry) putTomb(a *app, zone, host string, at int64) int64 {
	hk := hostKey{zone, host}
	if a.tombs == nil {
		a.tombs = make(map[hostKey]int64, 1)
	}
	prev, ok := a.tombs[hk]
	if ok {
		at = max(at, prev)
	} else {
		hk = hostKey{strings.Clone(zone), strings.Clone(host)}
		r.tombs++
	}
	a.tombs[hk] = at
	return at
}

func (r *Registry) dropTomb(a *app, zone, host string) {
	hk := hostKey{zone, host}
	if _, ok := a.tombs[hk]; !ok {
		return
	}
	delete(a.tombs, hk)
	r.tombs--
	if len(a.tombs) == 0 {
		a.tombs = nil
	}
}

// lowerExpected subtracts 2 from the expected renews, never below 0.
func (r *Registry) lowerExpected() {
	for {
		e := r.expected.Load()
		if r.expected.CompareAndSwap(e, max(e-2, 0)) {
			return
		}
	}
}

// changed invalidates the app's encoded answers and wakes its waiters.
// Called under mu.Lock after every advance of the app latest_timestamp.
func (r *Registry) changed(a *app) {
	a.cache.Store(nil)
	r.wakeLocked(a)
	r.version.Add(1)
	r.fire = true
}

// Changes returns the count of app changes so far (registrations,
// cancels, evictions, sets, imports: whatever advances an app's
// latest_timestamp; renews do not) and a channel closed at the next one.
// A caller that saw version v waits on the channel only while the count
// is still v (the admin page's live view).
func (r *Registry) Changes() (uint64, <-chan struct{}) {
	r.nextMu.Lock()
	defer r.nextMu.Unlock()
	if r.nextChan == nil {
		r.nextChan = make(chan struct{})
	}
	return r.version.Load(), r.nextChan
}

// Register stores in (client or replicated register). in.DirtyTimestamp == 0
// means "now" (a client register); > 0 is the sender's dirty_timestamp (a
// replicated register). Other timestamps of in are ignored and set per spec
// 3.3. If the stored copy has a greater dirty_timestamp (or a tombstone is
// newer) the stored state is kept and applied is false; the app
// latest_timestamp still advances (max(now, prev+1), also fed by latestHint)
// and pollers wake. stored is the resulting stored copy. Returns ErrInvalid
// for a status outside {1,2}, no addrs, an empty key field or a
// dirty_timestamp more than a day ahead of the clock.
//
// A client register (dirty 0) is by definition the newest version: its
// dirty_timestamp is now, raised to the stored copy's dirty_timestamp or to
// just past a tombstone when those are ahead of the local clock (a peer's
// clock running ahead), so it is never silently dropped. A tombstone blocks
// registers with dirty_timestamp <= its time. When nothing is stored (blocked
// by a tombstone) stored is the zero Instance.
func (r *Registry) Register(in Instance, latestHint int64) (stored Instance, applied bool, err error) {
	return r.RegisterFrom(in, latestHint, "")
}

// RegisterFrom is Register recording owner, the client address the
// registration came from (for the key-ownership write policy); "" keeps
// the owner recorded before, if any, and so does one that is not an IP
// address (owners are the source addresses of client requests). A new key beyond max_instances (or a
// new app or env beyond their caps) is ErrFull.
func (r *Registry) RegisterFrom(in Instance, latestHint int64, owner string) (stored Instance, applied bool, err error) {
	cur, applied, err := r.register(in, latestHint, owner)
	if cur != nil { // records are immutable: copy outside the lock
		stored = cur.instance(in.Env, in.AppID, in.Zone, false)
	}
	return stored, applied, err
}

// RegisterNoCopy is RegisterFrom for a caller that does not use the
// stored copy (a replicated register that goes no further, a node run
// without a Replicator): building it is a third of a register's allocations.
func (r *Registry) RegisterNoCopy(in Instance, latestHint int64, owner string) (applied bool, err error) {
	_, applied, err = r.register(in, latestHint, owner)
	return applied, err
}

// register applies a register; cur is the record stored for the key
// afterwards (nil when none is, or on an error).
func (r *Registry) register(in Instance, latestHint int64, owner string) (cur *rec, applied bool, err error) {
	if err := r.cfg.Limits.validateInstance(&in); err != nil {
		return nil, false, err
	}
	if err := r.tooFarAhead("dirty_timestamp", in.DirtyTimestamp); err != nil {
		return nil, false, err
	}
	nr := newRec(&in, parseOwner(owner)) // allocations and interning outside the lock

	r.mu.Lock()
	now := r.now()
	existed := r.getApp(in.Env, in.AppID) != nil
	a, err := r.ensureApp(in.Env, in.AppID)
	if err != nil {
		r.unlock()
		return nil, false, err
	}
	_, old := a.lookup(in.Zone, in.Hostname)
	if old == nil {
		if err := r.roomFor(); err != nil {
			if !existed {
				r.dropApp(a) // a refused register leaves no empty app behind
			}
			r.unlock()
			return nil, false, err
		}
	}
	tomb, hasTomb := a.tombs[hostKey{in.Zone, in.Hostname}]

	dirty := in.DirtyTimestamp
	if dirty <= 0 {
		dirty = now
		if old != nil && old.dirty > dirty {
			dirty = old.dirty
		}
		if hasTomb && tomb >= dirty {
			dirty = tomb + 1
		}
	}
	applied = (old == nil || old.dirty <= dirty) && (!hasTomb || tomb < dirty)

	cur = old
	if applied {
		nr.reg, nr.up, nr.dirty, nr.latest = now, now, dirty, now
		nr.renew.init(now, false)
		if old != nil {
			nr.up = old.up
		}
		r.put(a, in.Zone, nr)
		if hasTomb {
			r.dropTomb(a, in.Zone, in.Hostname)
		}
		cur = nr
	}
	a.advance(max(now, r.clampFuture(latestHint, now)))
	r.changed(a)
	r.unlock()
	return cur, applied, nil
}

// Renew sets renew_timestamp = now and counts one renew for the guard.
// Not replicated: absent → ErrNotFound. Replicated (spec 4.2.4): absent →
// ErrNotFound; stored dirty < dirty → ErrNotFound with the renewed copy;
// stored dirty > dirty → ErrConflict with the stored (newer) copy; equal → nil.
// The renew is applied in all cases where the instance exists. Never wakes
// pollers, never moves a latest timestamp.
func (r *Registry) Renew(k Key, replicated bool, dirty int64) (Instance, error) {
	rc, err := r.renew(k, replicated, dirty)
	if rc == nil {
		return Instance{}, err
	}
	// rc is immutable apart from renew: copy it without holding writers off.
	return rc.instance(k.Env, k.AppID, k.Zone, false), err
}

// RenewAppend is Renew for a caller that only sends the renewed instance
// on (a client's renew answer): it appends the instance's JSON to dst, the
// bytes wire.Instance.AppendJSON writes for Renew's copy, without building
// the copy. It appends nothing on ErrNotFound, and returns the stored
// dirty_timestamp (what a renew forwards to the peers).
func (r *Registry) RenewAppend(dst []byte, k Key, replicated bool, dirty int64) (out []byte, storedDirty int64, err error) {
	rc, err := r.renew(k, replicated, dirty)
	if rc == nil || errors.Is(err, ErrNotFound) {
		return dst, 0, err
	}
	return rc.appendJSON(dst, k.Env, k.AppID, k.Zone), rc.dirty, err
}

// RenewNoCopy is Renew for a caller that needs the instance only when it
// conflicts (a peer's replicated renew, answered -409 with the newer copy):
// conflict is that copy, nil otherwise. storedDirty is the stored
// dirty_timestamp when the instance exists.
func (r *Registry) RenewNoCopy(k Key, replicated bool, dirty int64) (storedDirty int64, conflict *Instance, err error) {
	rc, err := r.renew(k, replicated, dirty)
	if rc == nil {
		return 0, nil, err
	}
	if errors.Is(err, ErrConflict) {
		ins := rc.instance(k.Env, k.AppID, k.Zone, false)
		conflict = &ins
	}
	return rc.dirty, conflict, err
}

// renew applies a renew; rc is the renewed record (nil when absent).
func (r *Registry) renew(k Key, replicated bool, dirty int64) (*rec, error) {
	r.mu.RLock()
	a, _, rc := r.find(k)
	if rc == nil {
		r.mu.RUnlock()
		return nil, ErrNotFound
	}
	first := rc.renew.renewed(r.now())
	a.renewGen.Add(1) // after the store: a fetch that sees the new gen sees the new time
	r.renews.Add(1)
	if first { // its first renew: now it is expected to renew
		r.counted.Add(1)
		r.expected.Add(2)
	}
	r.mu.RUnlock()
	if replicated {
		switch {
		case rc.dirty < dirty:
			return rc, ErrNotFound
		case rc.dirty > dirty:
			return rc, ErrConflict
		}
	}
	return rc, nil
}

// Cancel removes an instance, records a tombstone at `at` (0 = now), advances
// the app latest_timestamp, drops empty zone/app, lowers expected renews by 2
// and wakes pollers. It returns the recorded tombstone (for forwarding). If
// at > 0 and the stored dirty_timestamp is greater than at (re-registered
// after the cancel was issued elsewhere) nothing is removed and ErrConflict
// is returned. Absent → ErrNotFound (a tombstone is still recorded when
// at > 0, so the cancel wins against a late register).
//
// Details: with at == 0 the tombstone time is max(now, stored dirty), so it
// covers the removed version even when that was stamped by a clock running
// ahead. The app latest_timestamp becomes max(at, prev+1) (spec 3.3: clients
// send no latest_timestamp, so prev+1). When nothing is recorded (ErrConflict,
// or ErrNotFound with at == 0) the returned tombstone has At == 0. A negative
// at counts as 0; an empty key field or an at more than a day ahead of the
// clock is ErrInvalid.
func (r *Registry) Cancel(k Key, at int64) (Tombstone, error) {
	if err := r.cfg.Limits.checkKey(k); err != nil {
		return Tombstone{}, err
	}
	// The cancel time travels as latest_timestamp on the wire (spec 4.0).
	if err := r.tooFarAhead("latest_timestamp", at); err != nil {
		return Tombstone{}, err
	}
	at = max(at, 0)
	r.mu.Lock()
	defer r.unlock()
	now := r.now()
	a, b, old := r.find(k)
	if old == nil {
		if at == 0 {
			return Tombstone{Key: k}, ErrNotFound
		}
		if a, err := r.ensureApp(k.Env, k.AppID); err == nil {
			return Tombstone{Key: k, At: r.putTomb(a, k.Zone, k.Hostname, at)}, ErrNotFound
		}
		return Tombstone{Key: k}, ErrNotFound // full: the cancel of an unknown key is not remembered
	}
	if at > 0 && old.dirty > at {
		return Tombstone{Key: k}, ErrConflict
	}
	tombAt := at
	if tombAt == 0 {
		tombAt = max(now, old.dirty)
	}
	r.remove(a, b, old, now)
	tombAt = r.putTomb(a, k.Zone, k.Hostname, tombAt)
	a.advance(r.clampFuture(at, now))
	r.changed(a)
	return Tombstone{Key: k, At: tombAt}, nil
}

// Evict removes one instance locally like an eviction: no tombstone, never
// replicated, app latest_timestamp advances, pollers wake, expected renews
// drop by 2. Used when membership declares a node dead (its infra.discovery
// record). Absent → ErrNotFound.
func (r *Registry) Evict(k Key) (Instance, error) {
	r.mu.Lock()
	a, b, rc := r.find(k)
	if rc == nil {
		r.unlock()
		return Instance{}, ErrNotFound
	}
	r.evictLocked(a, b, rc, r.now())
	r.unlock()
	return rc.instance(k.Env, k.AppID, k.Zone, false), nil
}

func (r *Registry) evictLocked(a *app, b *zoneBucket, rc *rec, now int64) {
	r.remove(a, b, rc, now)
	r.evictions++
	a.advance(now)
	r.changed(a)
}

// Set validates everything first (ErrInvalid: unknown app/zone/hostname,
// status not in {1,2}, list length mismatch, no hostname) and then applies the
// change to every hostname atomically (spec 4.4). Metadata is replaced, not
// merged. Instances whose stored dirty_timestamp is newer than the set
// timestamp are left unchanged (order tolerance for replicated sets). Returns
// the changed instances.
//
// Every changed instance gets dirty_timestamp = latest_timestamp = set
// timestamp (up_timestamp too when the status is set to 1). The app
// latest_timestamp advances to max(set timestamp, prev+1) and pollers wake
// when at least one instance changed (fix of Defect D3). A negative
// SetTimestamp, or one more than a day ahead of the clock, is ErrInvalid.
func (r *Registry) Set(req SetRequest) ([]Instance, error) {
	if err := r.cfg.Limits.validateSet(&req); err != nil {
		return nil, err
	}
	if err := r.tooFarAhead("set_timestamp", req.SetTimestamp); err != nil {
		return nil, err
	}
	var metas []string
	if len(req.Metadata) > 0 {
		metas = make([]string, len(req.Metadata))
		for i, m := range req.Metadata {
			metas[i] = packMeta(m)
		}
	}

	r.mu.Lock()
	defer r.unlock()
	now := r.now()
	ts := req.SetTimestamp
	if ts == 0 {
		ts = now
	}
	// Every failure here is about the hostnames: none of them is registered
	// under (env, appid, zone).
	a := r.getApp(req.Env, req.AppID)
	if a == nil || a.count == 0 {
		return nil, invalid("hostname", "%q: appid %q has no instance in env %q", req.Hostnames[0], req.AppID, req.Env)
	}
	b := a.bucket(req.Zone)
	if b == nil {
		return nil, invalid("hostname", "%q: zone %q has no instance of appid %q", req.Hostnames[0], req.Zone, req.AppID)
	}
	for _, h := range req.Hostnames {
		if b.get(h) == nil {
			return nil, invalid("hostname", "%q is not registered in %s/%s/%s", h, req.Env, req.AppID, req.Zone)
		}
	}

	var out []Instance
	for i, h := range req.Hostnames {
		old := b.get(h)
		if old.dirty > ts {
			continue // a newer version is already here
		}
		nr := old.clone()
		if len(req.Statuses) > 0 {
			p := nr.prof.Value()
			nr.prof = makeProfile(p.region, p.version, p.meta, uint8(req.Statuses[i])) // validated: 1 or 2
			if nr.isUp() {
				nr.up = ts
			}
		}
		if metas != nil {
			p := nr.prof.Value()
			nr.prof = makeProfile(p.region, p.version, metas[i], p.status)
		}
		nr.dirty, nr.latest = ts, ts
		r.put(a, b.name, nr)
		out = append(out, nr.instance(a.env, a.id, b.name, false))
	}
	if len(out) > 0 {
		a.advance(r.clampFuture(ts, now))
		r.changed(a)
	}
	return out, nil
}

func (l Limits) validateSet(req *SetRequest) error {
	for _, f := range [...]struct{ name, v string }{{"env", req.Env}, {"appid", req.AppID}, {"zone", req.Zone}} {
		if err := checkText(f.name, f.v, l.MaxStringLen, true); err != nil {
			return err
		}
	}
	n := len(req.Hostnames)
	if n == 0 {
		return invalid("hostname", "at least one is required")
	}
	for i, h := range req.Hostnames {
		if err := checkText(fmt.Sprintf("hostname[%d]", i), h, l.MaxStringLen, true); err != nil {
			return err
		}
	}
	for _, m := range req.Metadata {
		if err := l.checkMetadata(m); err != nil {
			return err
		}
	}
	if len(req.Statuses) != 0 && len(req.Statuses) != n {
		return invalid("status", "%d values for %d hostnames", len(req.Statuses), n)
	}
	if len(req.Metadata) != 0 && len(req.Metadata) != n {
		return invalid("metadata", "%d values for %d hostnames", len(req.Metadata), n)
	}
	for i, s := range req.Statuses {
		if s != StatusUp && s != StatusWaiting {
			return invalid(fmt.Sprintf("status[%d]", i), "must be 1 or 2, got %d", s)
		}
	}
	if req.SetTimestamp < 0 {
		return invalid("set_timestamp", "must be >= 0, got %d", req.SetTimestamp)
	}
	return nil
}

// Import merges a copy from a peer keeping all its timestamps (startup sync,
// anti-entropy, adopting a -409 answer). It applies only when in is newer
// than the stored copy (greater dirty_timestamp) or the key is absent and no
// newer tombstone exists. The app latest_timestamp becomes
// max(in.LatestTimestamp, prev+1); pollers wake.
//
// Details: an invalid copy (it fails the limits and checks every stored
// record passes, or a timestamp is more than max_clock_skew ahead of the
// clock) is refused, and so is a new key beyond the caps; a zero timestamp
// in the copy is replaced by now (timestamps are never 0 on the wire); a
// tombstone at t blocks copies with dirty <= t. When the copy is not
// applied nothing changes (no advance, no wake-up). An imported key counts
// toward the expected renews from its first renew, like any other.
func (r *Registry) Import(in Instance) (applied bool) {
	if r.cfg.Limits.validateInstance(&in) != nil {
		return false
	}
	for _, t := range [...]int64{in.RegTimestamp, in.UpTimestamp, in.RenewTimestamp, in.DirtyTimestamp, in.LatestTimestamp} {
		// A far-future renew_timestamp would also keep the copy from ever
		// being evicted.
		if r.tooFarAhead("timestamp", t) != nil {
			return false
		}
	}
	nr := newRec(&in, ownerIP{})
	r.mu.Lock()
	defer r.unlock()
	now := r.now()
	nz := func(v int64) int64 {
		if v == 0 {
			return now
		}
		return v
	}
	nr.reg, nr.up, nr.dirty, nr.latest = nz(in.RegTimestamp), nz(in.UpTimestamp), nz(in.DirtyTimestamp), nz(in.LatestTimestamp)
	nr.renew.init(nz(in.RenewTimestamp), false)

	a := r.getApp(in.Env, in.AppID)
	var old *rec
	if a != nil {
		_, old = a.lookup(in.Zone, in.Hostname)
		if old != nil && old.dirty >= nr.dirty {
			return false
		}
		if tomb, ok := a.tombs[hostKey{in.Zone, in.Hostname}]; ok && old == nil && tomb >= nr.dirty {
			return false
		}
	} else {
		var err error
		if a, err = r.ensureApp(in.Env, in.AppID); err != nil {
			return false
		}
		if r.roomFor() != nil {
			r.dropApp(a) // made for this import: no empty app left behind
			return false
		}
	}
	if old == nil && r.roomFor() != nil {
		return false
	}
	r.put(a, in.Zone, nr)
	r.dropTomb(a, in.Zone, in.Hostname)
	a.advance(r.clampFuture(nr.latest, now))
	r.changed(a)
	return true
}

// Owner returns the client address recorded for a live key (RegisterFrom);
// "" when unknown.
func (r *Registry) Owner(k Key) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, _, rc := r.find(k); rc != nil {
		return rc.owner().String()
	}
	return ""
}

// Get returns a copy of one instance.
func (r *Registry) Get(k Key) (Instance, bool) {
	r.mu.RLock()
	_, _, rc := r.find(k)
	r.mu.RUnlock()
	if rc == nil {
		return Instance{}, false
	}
	return rc.instance(k.Env, k.AppID, k.Zone, false), true
}
