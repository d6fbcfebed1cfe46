package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// errRepoll is the cancel cause of a poll interrupted because a new appid
// joined the watch set (spec 5.2.2: the client closes the connection and
// polls again at once).
var errRepoll = errors.New("watch set changed")

// A -304 that came back sooner than PollTimeout/minHoldFraction was not
// held; maxFast304 of them in a row count as a node failure.
const (
	minHoldFraction = 8
	maxFast304      = 3
)

// appState is what the client knows about one watched appid.
type appState struct {
	latest int64      // latest_timestamp to send; per node, reset on switch
	info   *Instances // last delivered set; nil: nothing known yet
	seq    uint64     // hub sequence number of info
	refs   int        // watchers, including the client's own infra watch
}

// hub holds the watched appids and fans poll results out to watchers. Every
// event (a changed set, a poll error) takes the next sequence number; a
// watcher's cursor is the number of the last event it returned, so a slow
// watcher skips intermediate sets (latest wins) but never misses the newest.
type hub struct {
	mu         sync.Mutex
	apps       map[string]*appState
	seq        uint64
	errSeq     uint64
	lastErr    error
	notify     chan struct{} // closed and replaced on every event
	closed     bool
	pollSet    map[string]bool // appids of the in-flight poll
	pollCancel context.CancelCauseFunc
}

func (h *hub) init() {
	h.apps = map[string]*appState{}
	h.notify = make(chan struct{})
}

func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.apps)
}

// broadcastLocked wakes every waiting Next.
func (h *hub) broadcastLocked() {
	close(h.notify)
	h.notify = make(chan struct{})
}

// addRef adds a watcher of appid. A new appid interrupts the in-flight poll
// so the next one carries it.
func (h *hub) addRef(appid string) {
	st := h.apps[appid]
	if st == nil {
		st = &appState{}
		h.apps[appid] = st
	}
	st.refs++
	if h.pollCancel != nil && !h.pollSet[appid] {
		h.pollCancel(errRepoll)
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.broadcastLocked()
}

// Watcher follows the instance set of one appid. Create it with
// Client.Watch; it is safe for concurrent use (each update is returned to
// one caller of Next). Close it when done; Client.Close ends it too.
type Watcher struct {
	c      *Client
	appid  string
	cursor uint64 // guarded by hub.mu
	sent   bool   // guarded by hub.mu
	closed bool   // guarded by hub.mu
	done   chan struct{}
	once   sync.Once
}

// Watch starts following appid's UP instances and returns at once; Next
// delivers the sets. All watchers of a client share one long-poll request:
// watching an appid not yet in it restarts that request with the new set.
//
// Semantics, as the protocol allows:
//   - The first Next returns as soon as the server answers for appid (at
//     once when the appid has UP instances; otherwise when its first UP
//     instance registers — the server holds polls for unknown appids).
//   - Later calls return each changed set; a reader that falls behind gets
//     the newest set only.
//   - A set is never empty while the appid exists: the server answers only
//     with UP instances and holds the poll instead of answering an empty
//     list, so removing an instance is seen when others remain. When the
//     last UP instance goes away (cancel, eviction, status set to WAITING)
//     the server does not answer for that appid; the watcher then keeps the
//     last set until the server reports the appid unknown in some later
//     answer (another watched appid changes, a new Watch, a node switch), at
//     which point Next returns an empty set. Use Fetch to check on demand.
func (c *Client) Watch(appid string) (*Watcher, error) {
	if appid == "" {
		return nil, fmt.Errorf("%w: Watch: empty appid", ErrInvalidInstance)
	}
	h := &c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.addRef(appid)
	return &Watcher{c: c, appid: appid, cursor: h.seq, done: make(chan struct{})}, nil
}

// AppID returns the watched appid.
func (w *Watcher) AppID() string { return w.appid }

// Next blocks until there is something new for this watcher and returns it:
//   - a set of instances (a copy the caller owns), the first one as soon as
//     it is known, then each changed one;
//   - or a transient error wrapping ErrUnavailable or ErrBadResponse: the
//     shared poll failed (the client is already trying another node, with
//     backoff). The last set returned is still the best knowledge; call Next
//     again.
//
// It returns ErrClosed once the watcher or the client is closed, and
// ctx's error when ctx ends first.
func (w *Watcher) Next(ctx context.Context) (*Instances, error) {
	h := &w.c.hub
	for {
		h.mu.Lock()
		if w.closed || h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		if st := h.apps[w.appid]; st.info != nil && (!w.sent || st.seq > w.cursor) {
			w.sent = true
			w.cursor = max(w.cursor, st.seq)
			info := st.info.clone()
			h.mu.Unlock()
			return info, nil
		}
		if h.errSeq > w.cursor {
			w.cursor = h.errSeq
			err := h.lastErr
			h.mu.Unlock()
			return nil, err
		}
		ch := h.notify
		h.mu.Unlock()
		select {
		case <-ch:
		case <-w.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the watcher; a Next in progress returns ErrClosed. The appid
// leaves the client's poll when its last watcher closes. Idempotent.
func (w *Watcher) Close() {
	w.once.Do(func() {
		h := &w.c.hub
		h.mu.Lock()
		w.closed = true
		if st := h.apps[w.appid]; st != nil {
			st.refs--
			if st.refs == 0 {
				delete(h.apps, w.appid)
			}
		}
		h.mu.Unlock()
		close(w.done)
	})
}

// pollLoop runs the client's single long-poll until Close: poll, apply,
// repeat; on failure move to another node and back off.
func (c *Client) pollLoop() {
	defer c.wg.Done()
	h := &c.hub
	bo := c.newBackoff()
	var lastNode string
	fast304 := 0 // consecutive -304 answers that did not hold
	for c.ctx.Err() == nil {
		node := c.nodes.current()
		h.mu.Lock()
		if node != lastNode {
			// Timestamps are per node: never compare across nodes (spec 8.2).
			for _, st := range h.apps {
				st.latest = 0
			}
		}
		appids := sortedKeys(h.apps)
		sent := make(map[string]int64, len(appids))
		for _, a := range appids {
			sent[a] = h.apps[a].latest
		}
		pctx, cancel := context.WithCancelCause(c.ctx)
		h.pollSet = make(map[string]bool, len(appids))
		for _, a := range appids {
			h.pollSet[a] = true
		}
		h.pollCancel = cancel
		h.mu.Unlock()
		lastNode = node

		started := time.Now()
		ans, notModified, err := c.poll(pctx, node, appids, sent)
		interrupted := errors.Is(context.Cause(pctx), errRepoll)
		cancel(nil)
		h.mu.Lock()
		h.pollSet, h.pollCancel = nil, nil
		h.mu.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && interrupted:
			c.metrics.polls.WithLabelValues("interrupted").Inc()
			continue
		case err == nil && notModified:
			c.metrics.polls.WithLabelValues("not_modified").Inc()
			// -304 means "held until timeout": re-poll at once (spec 5.5).
			// A node that answers it without holding (a few in a row) is
			// broken, and re-polling it at once would loop hot.
			if time.Since(started) >= c.cfg.PollTimeout/minHoldFraction {
				fast304 = 0
				bo.Reset()
				continue
			}
			if fast304++; fast304 < maxFast304 {
				continue
			}
			fast304 = 0
			err = fmt.Errorf("%w: polls on %s: -304 without holding, %d times in a row", ErrBadResponse, node, maxFast304)
		case err == nil:
			err = c.apply(node, sent, ans)
		}
		if err == nil {
			fast304 = 0
			c.metrics.polls.WithLabelValues("changed").Inc()
			bo.Reset()
			continue
		}
		c.metrics.polls.WithLabelValues("error").Inc()
		h.mu.Lock()
		h.seq++
		h.errSeq, h.lastErr = h.seq, err
		h.broadcastLocked()
		h.mu.Unlock()
		c.nodeFailed(node, "polls", err)
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// poll sends one polls request.
func (c *Client) poll(ctx context.Context, node string, appids []string, sent map[string]int64) (*pollAnswer, bool, error) {
	q := url.Values{"env": {c.cfg.Env}, "hostname": {c.cfg.Hostname}}
	for _, a := range appids {
		q.Add("appid", a)
		q.Add("latest_timestamp", strconv.FormatInt(sent[a], 10))
	}
	env, err := c.roundTrip(ctx, node, http.MethodGet, "/discovery/polls", q, c.cfg.PollTimeout)
	if err != nil {
		return nil, false, err
	}
	switch env.Code {
	case -304:
		return nil, true, nil
	case 0:
	default:
		return nil, false, codeErr("polls", node, env)
	}
	asked := make(map[string]bool, len(appids))
	for _, a := range appids {
		asked[a] = true
	}
	ans, err := decodePolls(env, asked)
	if err != nil {
		return nil, false, fmt.Errorf("polls on %s: %w", node, err)
	}
	return ans, false, nil
}

// apply stores a successful answer and notifies watchers of sets whose
// content changed. An answer that moves nothing forward is a bad answer: a
// correct server holds instead, and re-polling at once would loop hot.
func (c *Client) apply(node string, sent map[string]int64, ans *pollAnswer) error {
	h := &c.hub
	h.mu.Lock()
	progress := false
	var infra *Instances
	for appid, info := range ans.changed {
		st := h.apps[appid]
		if info.LatestTimestamp != sent[appid] {
			progress = true
		}
		if st == nil {
			continue // unwatched while the poll was in flight
		}
		st.latest = info.LatestTimestamp
		if st.info == nil || !st.info.sameContent(info) {
			h.seq++
			st.info, st.seq = info, h.seq
			if appid == InfraAppID {
				infra = info
			}
		} else {
			st.info.LatestTimestamp = info.LatestTimestamp
		}
	}
	for _, appid := range ans.missing {
		st := h.apps[appid]
		if st == nil {
			continue
		}
		st.latest = 0
		if st.info != nil && len(st.info.Zones) > 0 {
			progress = true
			h.seq++
			st.info = &Instances{AppID: appid, Zones: map[string][]Instance{}}
			st.seq = h.seq
		}
	}
	if progress {
		h.broadcastLocked()
	}
	h.mu.Unlock()
	if !progress {
		return fmt.Errorf("%w: polls on %s: answer carries no change", ErrBadResponse, node)
	}
	if infra != nil {
		same, other := nodesFromInfra(infra, c.cfg.Zone, c.scheme)
		if c.nodes.setLearned(same, other) {
			c.log.Info("discovery node list updated", "same_zone", same, "other_zones", other)
		}
	}
	return nil
}
