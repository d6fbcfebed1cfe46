package registry

import (
	"slices"
	"strings"
	"sync/atomic"
)

// Poll checks a long-poll request and, when nothing is answerable, arms a
// waiter in the same critical section (no change can slip between the check
// and the arming, spec 5.4.3). Exactly one of res and w is non-nil.
//
// An appid is "changed" when the client's value is below the app
// latest_timestamp AND its filtered UP list is non-empty (spec 5.5.1); the
// answer holds only changed appids, plus missing ones. The caller waits on
// w.C(), then calls Repoll (the wake may have been for a change that leaves
// nothing to answer, so Repoll may arm a new waiter); a waiter that is not
// handed to Repoll must be closed with w.Close.
//
// Details: a repeated appid is answered once (first occurrence); a missing
// Latest value counts as 0. A waiter is linked to every requested appid,
// known or not, so the first register of an unknown appid wakes it (5.3.4).
// It is signalled only by changes after which the app has at least one UP
// instance through the request's zone filter.
func (r *Registry) Poll(req PollRequest) (res *PollResult, w *Waiter) {
	return r.poll(req, nil)
}

// Repoll closes w after it was signalled and polls req again (the same
// request w was armed for). Appids whose change signalled w count as
// changed whatever the client's latest_timestamp, so the wake-up answer
// always holds the triggering appid (spec 5.3.2), also when the client's
// value is ahead of the app counter (e.g. kept across a restart of this
// node: the counter then restarts from the synced instances and a cancel
// only adds 1). Other appids follow Poll's rule. As with Poll, exactly one of
// res and the new waiter is non-nil.
func (r *Registry) Repoll(req PollRequest, w *Waiter) (res *PollResult, next *Waiter) {
	return r.poll(req, w.close())
}

// poll is Poll; fired[k] (k-th distinct appid of req) marks appids answered
// as if the client had sent 0.
func (r *Registry) poll(req PollRequest, fired []bool) (res *PollResult, w *Waiter) {
	type hit struct {
		id string
		p  *payload
	}
	var (
		changed []hit
		missing []string
		seen    map[string]struct{}
	)
	ids := make([]string, 0, len(req.AppIDs))

	r.mu.RLock()
	es := r.envs[req.Env]
	for i, id := range req.AppIDs {
		if dupID(ids, &seen, id) {
			continue
		}
		var l int64
		if i < len(req.Latest) && (len(ids) >= len(fired) || !fired[len(ids)]) {
			l = req.Latest[i]
		}
		ids = append(ids, id)
		var a *app
		if es != nil {
			a = es.apps[id]
		}
		if a == nil || a.count == 0 || (req.Zone != "" && a.bucket(req.Zone) == nil) {
			missing = append(missing, id)
			continue
		}
		if l < a.latest && a.upIn(req.Zone) > 0 {
			changed = append(changed, hit{id, a.payloadFor(req.Zone, StatusUp, false)})
		}
	}
	if len(changed) == 0 {
		w = r.armLocked(req.Env, req.Zone, ids)
		r.mu.RUnlock()
		return nil, w
	}
	r.mu.RUnlock()

	res = &PollResult{Changed: make([]AppPayload, len(changed)), Missing: missing}
	for i, h := range changed {
		res.Changed[i] = AppPayload{AppID: h.id, JSON: h.p.bytes(r)}
	}
	return res, nil
}

// dupID reports whether id is already in ids; long lists switch to a set.
func dupID(ids []string, seen *map[string]struct{}, id string) bool {
	const linear = 16
	if len(ids) < linear {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]struct{}, 2*linear)
		for _, x := range ids {
			(*seen)[x] = struct{}{}
		}
	}
	if _, ok := (*seen)[id]; ok {
		return true
	}
	(*seen)[id] = struct{}{}
	return false
}

// Waiter is one parked long-poll request. Each request has its own waiter
// (never shared by hostname).
//
// Wake-ups are built so that waking n waiters costs O(n) once and each woken
// request then does O(1) work without contending for the registry's locks:
// the writer detaches every waiter it wakes from all its lists while it
// holds wmu anyway, and signals the channels only after releasing mu (see
// unlock), so a woken request finds neither lock held by the writer, and
// Repoll reads the fired marks without taking wmu (the marks are written
// before detached is set, and detached before the signal).
type Waiter struct {
	r *Registry
	// ch is made by the first C() (capacity 1): a waiter that is only told
	// through OnWake (a lean poll) holds no channel, 96 bytes less per
	// parked poll.
	ch       atomic.Pointer[chan struct{}]
	zone     string
	links    []wlink     // one per distinct appid; never reallocated (lists point into it)
	closed   bool        // unlinked, by Close or by a wake (guarded by r.wmu)
	detached atomic.Bool // unlinked by a wake: links' fired marks are final
	// notify, when set (OnWake), is called when the waiter is signalled,
	// besides the signal on ch: a parked request that has no goroutine
	// selecting on ch learns of its wake this way.
	notify atomic.Pointer[func()]
}

// OnWake makes f be called when the waiter is signalled (from the waking
// writer's goroutine or the fan-out's; f must be quick and must not
// block), and at once if it was signalled already. f may be called twice
// for one wake (it must be idempotent).
func (w *Waiter) OnWake(f func()) {
	w.notify.Store(&f)
	if w.detached.Load() {
		f()
	}
}

// wlink is a waiter's membership in one app's waiter list (intrusive doubly
// linked list: O(1) unlink, no per-link allocation).
type wlink struct {
	w          *Waiter
	list       *waitList
	prev, next *wlink
	fired      bool // this appid's change signalled w (written under r.wmu before detached)
}

type waitList struct {
	key  AppKey
	head *wlink
	n    int // links in the list: a wake sizes its pending slice once
}

// armLocked links a new waiter under each appid. Caller holds mu.RLock.
func (r *Registry) armLocked(env, zone string, ids []string) *Waiter {
	w := &Waiter{r: r, zone: zone, links: make([]wlink, len(ids))}
	r.wmu.Lock()
	for i, id := range ids {
		k := AppKey{Env: env, AppID: id}
		l := r.waiters[k]
		if l == nil {
			k = AppKey{Env: strings.Clone(env), AppID: strings.Clone(id)}
			l = &waitList{key: k}
			r.waiters[k] = l
		}
		x := &w.links[i]
		x.w, x.list, x.next = w, l, l.head
		if l.head != nil {
			l.head.prev = x
		}
		l.head = x
		l.n++
	}
	r.nWaiters++
	r.wmu.Unlock()
	return w
}

// wakeLocked detaches every waiter of the app for which the app now has an
// UP instance through the waiter's zone filter (a wake that could only
// produce an empty answer is skipped, spec 5.5.1 / 5.3.3), marks the appid
// as the one that fired, and queues its signal for unlock. Caller holds
// mu.Lock.
func (r *Registry) wakeLocked(a *app) {
	if a.up == 0 {
		return
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	l := r.waiters[AppKey{Env: a.env, AppID: a.id}]
	if l == nil {
		return
	}
	// Sized once: appending 10 000 waiters grew the slice 14 times and
	// left twice its size as garbage, under the write lock.
	r.pending = slices.Grow(r.pending, l.n)
	for x := l.head; x != nil; {
		next := x.next // x is unlinked below; a waiter has one link per list
		w := x.w
		if w.zone == "" || a.upIn(w.zone) > 0 {
			x.fired = true
			w.unlinkLocked()
			w.detached.Store(true)
			r.pending = append(r.pending, w)
		}
		x = next
	}
}

// unlock releases mu.Lock, then signals the waiters woken under it. Writers
// use it instead of mu.Unlock: a woken request that runs at once would
// otherwise block on mu right away and be woken a second time.
func (r *Registry) unlock() {
	p := r.pending
	r.pending = nil
	fire := r.fire
	r.fire = false
	r.mu.Unlock()
	if fire {
		r.nextMu.Lock()
		if r.nextChan != nil {
			close(r.nextChan)
			r.nextChan = nil
		}
		r.nextMu.Unlock()
	}
	if len(p) > inlineWakes {
		// A large fan-out (10 000 parked polls on one app) is signalled
		// from its own goroutine: the writer answers its client at once
		// instead of after every waiter was made runnable. The goroutine
		// ends when the sends are done (they never block).
		go signalAll(p)
		return
	}
	signalAll(p)
}

// inlineWakes is the fan-out a writer signals itself; beyond it the
// signals go to a goroutine of their own.
const inlineWakes = 64

func signalAll(p []*Waiter) {
	for _, w := range p {
		// Never blocks: a waiter is detached once, and C() sends only to
		// a channel that is empty or full (capacity 1, non-blocking).
		if c := w.ch.Load(); c != nil {
			signal(*c)
		}
		if f := w.notify.Load(); f != nil {
			(*f)()
		}
	}
}

// unlinkLocked removes w from every list. Caller holds r.wmu and w is not
// closed.
func (w *Waiter) unlinkLocked() {
	r := w.r
	w.closed = true
	for i := range w.links {
		x := &w.links[i]
		l := x.list
		if x.prev != nil {
			x.prev.next = x.next
		} else {
			l.head = x.next
		}
		if x.next != nil {
			x.next.prev = x.prev
		}
		l.n--
		x.prev, x.next, x.list = nil, nil, nil
		if l.head == nil {
			delete(r.waiters, l.key)
		}
	}
	r.nWaiters--
}

// C is signalled (non-blocking, capacity 1) when an app the waiter watches
// changes.
func (w *Waiter) C() <-chan struct{} {
	if c := w.ch.Load(); c != nil {
		return *c
	}
	c := make(chan struct{}, 1)
	if !w.ch.CompareAndSwap(nil, &c) {
		return *w.ch.Load()
	}
	// A wake that signalled before the channel existed: detached is
	// stored before signalAll loads ch, so one of the two sends.
	if w.detached.Load() {
		signal(c)
	}
	return c
}

// signal sends on a capacity-1 channel unless it is full.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Close disarms the waiter. Safe to call more than once.
func (w *Waiter) Close() { w.close() }

// close disarms the waiter and reports, per link, whether that appid's
// change signalled it (nil when none did or when already closed by Close).
func (w *Waiter) close() (fired []bool) {
	if !w.detached.Load() {
		r := w.r
		r.wmu.Lock()
		if !w.closed {
			w.unlinkLocked()
			r.wmu.Unlock()
			return nil // not detached by a wake: nothing fired
		}
		r.wmu.Unlock()
		if !w.detached.Load() {
			return nil // closed before
		}
	}
	// Detached by a wake: the marks are final and visible (detached was
	// stored after them). A second close reports them again, harmlessly.
	for i := range w.links {
		if w.links[i].fired {
			if fired == nil {
				fired = make([]bool, len(w.links))
			}
			fired[i] = true
		}
	}
	return fired
}
