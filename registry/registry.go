package registry

import (
	"context"
	"log/slog"
)

// Registry is the in-memory registry. Create it with New.
type Registry struct {
	// implementation pending (registry helper fills this file)
}

// New builds a registry. clock nil means the system clock; logger nil means
// slog.DiscardHandler.
func New(cfg Config, clock Clock, logger *slog.Logger) (*Registry, error) {
	panic("unimplemented")
}

// Register stores in (client or replicated register). in.DirtyTimestamp == 0
// means "now" (a client register); > 0 is the sender's dirty_timestamp (a
// replicated register). Other timestamps of in are ignored and set per spec
// 3.3. If the stored copy has a greater dirty_timestamp (or a tombstone is
// newer) the stored state is kept and applied is false; the app
// latest_timestamp still advances (max(now, prev+1), also fed by latestHint)
// and pollers wake. stored is the resulting stored copy. Returns ErrInvalid
// for a status outside {1,2}, no addrs or an empty key field.
func (r *Registry) Register(in Instance, latestHint int64) (stored Instance, applied bool, err error) {
	panic("unimplemented")
}

// Renew sets renew_timestamp = now and counts one renew for the guard.
// Not replicated: absent → ErrNotFound. Replicated (spec 4.2.4): absent →
// ErrNotFound; stored dirty < dirty → ErrNotFound with the renewed copy;
// stored dirty > dirty → ErrConflict with the stored (newer) copy; equal → nil.
// The renew is applied in all cases where the instance exists. Never wakes
// pollers, never moves a latest timestamp.
func (r *Registry) Renew(k Key, replicated bool, dirty int64) (Instance, error) {
	panic("unimplemented")
}

// Cancel removes an instance, records a tombstone at `at` (0 = now), advances
// the app latest_timestamp, drops empty zone/app, lowers expected renews by 2
// and wakes pollers. It returns the recorded tombstone (for forwarding). If
// at > 0 and the stored dirty_timestamp is greater than at (re-registered
// after the cancel was issued elsewhere) nothing is removed and ErrConflict
// is returned. Absent → ErrNotFound (a tombstone is still recorded when
// at > 0, so the cancel wins against a late register).
func (r *Registry) Cancel(k Key, at int64) (Tombstone, error) {
	panic("unimplemented")
}

// Evict removes one instance locally like an eviction: no tombstone, never
// replicated, app latest_timestamp advances, pollers wake, expected renews
// drop by 2. Used when membership declares a node dead (its infra.discovery
// record). Absent → ErrNotFound.
func (r *Registry) Evict(k Key) (Instance, error) {
	panic("unimplemented")
}

// Set validates everything first (ErrInvalid: unknown app/zone/hostname,
// status not in {1,2}, list length mismatch, no hostname) and then applies the
// change to every hostname atomically (spec 4.4). Metadata is replaced, not
// merged. Instances whose stored dirty_timestamp is newer than the set
// timestamp are left unchanged (order tolerance for replicated sets). Returns
// the changed instances.
func (r *Registry) Set(req SetRequest) ([]Instance, error) {
	panic("unimplemented")
}

// Import merges a copy from a peer keeping all its timestamps (startup sync,
// anti-entropy, adopting a -409 answer). It applies only when in is newer
// than the stored copy (greater dirty_timestamp) or the key is absent and no
// newer tombstone exists. The app latest_timestamp becomes
// max(in.LatestTimestamp, prev+1); pollers wake.
func (r *Registry) Import(in Instance) (applied bool) {
	panic("unimplemented")
}

// Get returns a copy of one instance.
func (r *Registry) Get(k Key) (Instance, bool) {
	panic("unimplemented")
}

// Fetch answers fetch (spec 4.6): unknown app → ErrNotFound; zone given and
// absent → ErrNotFound; otherwise instances filtered by the status bit mask,
// zones with no match present as empty slices.
func (r *Registry) Fetch(env, appid, zone string, statusMask uint32) (*InstanceInfo, error) {
	panic("unimplemented")
}

// FetchAll answers fetch/all: appid → instances of every env, zone, status.
func (r *Registry) FetchAll() map[string][]*Instance {
	panic("unimplemented")
}

// Poll checks a long-poll request and, when nothing is answerable, arms a
// waiter in the same critical section (no change can slip between the check
// and the arming, spec 5.4.3). Exactly one of res and w is non-nil.
//
// An appid is "changed" when the client's value is below the app
// latest_timestamp AND its filtered UP list is non-empty (spec 5.5.1); the
// answer holds only changed appids, plus missing ones. The caller waits on
// w.C(), then calls w.Close() and Poll again (the wake may have been for a
// change that leaves nothing to answer). w.Close must always be called.
func (r *Registry) Poll(req PollRequest) (res *PollResult, w *Waiter) {
	panic("unimplemented")
}

// Waiter is one parked long-poll request. Each request has its own waiter
// (never shared by hostname).
type Waiter struct{}

// C is signalled (non-blocking, capacity 1) when an app the waiter watches
// changes.
func (w *Waiter) C() <-chan struct{} { panic("unimplemented") }

// Close disarms the waiter. Safe to call more than once.
func (w *Waiter) Close() { panic("unimplemented") }

// Snapshot returns a copy of every instance and live tombstone.
func (r *Registry) Snapshot() Snapshot {
	panic("unimplemented")
}

// AppDigests returns, per app (including apps known only by tombstones), a
// hash over (key, dirty_timestamp) of its instances and tombstones. Two nodes
// with equal digests for an app hold the same versions of it. Renew
// timestamps do not enter the digest.
func (r *Registry) AppDigests() map[AppKey]uint64 {
	panic("unimplemented")
}

// AppState returns the instances and tombstones of the given apps.
func (r *Registry) AppState(apps []AppKey) Snapshot {
	panic("unimplemented")
}

// Scan runs one eviction pass now: closes the guard window, recomputes
// expected renews when due, expires tombstones and evicts per spec 6.2/6.3.
// Returns the evicted instances.
func (r *Registry) Scan() []Instance {
	panic("unimplemented")
}

// Run calls Scan every EvictInterval until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	panic("unimplemented")
}

// Stats returns a point-in-time view for metrics.
func (r *Registry) Stats() Stats {
	panic("unimplemented")
}
