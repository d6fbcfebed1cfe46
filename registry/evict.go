package registry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Scan runs one eviction pass now: closes the guard window, recomputes
// expected renews when due, expires tombstones and evicts per spec 6.2/6.3.
// Returns the evicted instances.
//
// Order: the window counter R is swapped to 0; if ExpectedResetInterval has
// passed since the last recompute, expected renews E = 2 × the instances
// that renewed at least once (registrations that never renew do not count:
// they cannot switch protection on); the
// node is protected when SelfPreservation is on and R < floor(E ×
// ProtectThreshold) (never with E = 0). Candidates are instances silent for
// strictly more than EvictAfter (unprotected) or ProtectedEvictAfter
// (always); at most size - floor(size × ProtectThreshold) of them, chosen
// uniformly at random, are evicted. Each eviction advances its app's
// latest_timestamp to max(now, prev+1), wakes pollers, lowers E by 2 and
// leaves no tombstone. Empty apps whose tombstones are gone are forgotten
// TombstoneTTL after their last instance went away, and encoded poll answers
// nobody asked for since the previous scan are dropped.
func (r *Registry) Scan() []Instance {
	r.mu.Lock()
	defer r.unlock()
	now := r.now()

	renews := r.renews.Swap(0)
	r.lastRenews = renews
	if now-r.lastReset >= int64(r.cfg.ExpectedResetInterval) {
		r.expected.Store(2 * r.counted.Load())
		r.lastReset = now
	}
	expected := r.expected.Load()
	threshold := r.threshold(expected)
	protected := r.cfg.SelfPreservation && renews < threshold
	if protected != r.protected {
		attrs := []any{"expected", expected, "threshold", threshold, "actual", renews}
		if protected {
			r.log.Warn("self-preservation on: too few renews, evicting only instances silent longer than protected_evict_after",
				append(attrs, "protected_evict_after", r.cfg.ProtectedEvictAfter)...)
		} else {
			r.log.Info("self-preservation off: renews back to normal", attrs...)
		}
		r.protected = protected
	}

	type cand struct {
		a  *app
		b  *zoneBucket
		rc *rec
	}
	var cands []cand
	evictAfter := int64(r.cfg.EvictAfter)
	if protected {
		evictAfter = int64(r.cfg.ProtectedEvictAfter)
	}
	ttl := int64(r.cfg.TombstoneTTL)
	for envName, es := range r.envs {
		for id, a := range es.apps {
			for hk, at := range a.tombs {
				if now-at > ttl {
					delete(a.tombs, hk)
					r.tombs--
				}
			}
			if len(a.tombs) == 0 {
				a.tombs = nil
			}
			a.trimCache()
			if a.count == 0 {
				if a.tombs == nil && now-a.emptyAt > ttl {
					delete(es.apps, id)
					r.nApps-- // the slot is free for a new app
				}
				continue
			}
			for _, b := range a.zones {
				for rc := range b.recs() {
					if now-rc.renew.ts() > evictAfter {
						cands = append(cands, cand{a, b, rc})
					}
				}
			}
		}
		if len(es.apps) == 0 {
			delete(r.envs, envName)
		}
	}

	limit := r.size - int(float64(r.size)*r.cfg.ProtectThreshold)
	if len(cands) > limit {
		// Partial Fisher-Yates: a uniform random subset of size limit, so no
		// single app is wiped out first.
		for i := range limit {
			j := i + rand.IntN(len(cands)-i)
			cands[i], cands[j] = cands[j], cands[i]
		}
		cands = cands[:limit]
	}
	if len(cands) == 0 {
		return nil
	}
	out := make([]Instance, 0, len(cands))
	for _, c := range cands {
		out = append(out, c.rc.instance(c.a.env, c.a.id, c.b.name, false))
		r.evictLocked(c.a, c.b, c.rc, now)
	}
	r.log.Info("evicted silent instances", "count", len(out), "protected", protected)
	return out
}

// Run calls Scan every EvictInterval until ctx ends. It returns nil when ctx
// ends (the scanner has no failure mode).
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.EvictInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Scan()
		}
	}
}
