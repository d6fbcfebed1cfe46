package client_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
)

// fakeStore is the registry shared by the nodes of a fake cluster, so that a
// client switching nodes sees the same data (as replication would give it),
// with latest_timestamps that are strictly increasing per app.
type fakeStore struct {
	mu     sync.Mutex
	apps   map[string]*fakeApp // env/appid
	last   int64
	notify chan struct{}
}

type fakeApp struct {
	ins    map[string]*client.Instance // zone/hostname
	latest int64
}

func newFakeStore() *fakeStore {
	return &fakeStore{apps: map[string]*fakeApp{}, notify: make(chan struct{})}
}

func (s *fakeStore) bumpLocked(a *fakeApp) {
	s.last = max(s.last+1, time.Now().UnixNano())
	a.latest = s.last
	close(s.notify)
	s.notify = make(chan struct{})
}

// put registers (or replaces) an instance, like a register request.
func (s *fakeStore) put(in client.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := in.Env + "/" + in.AppID
	a := s.apps[k]
	if a == nil {
		a = &fakeApp{ins: map[string]*client.Instance{}}
		s.apps[k] = a
	}
	if in.Status == 0 {
		in.Status = client.StatusUp
	}
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	now := time.Now().UnixNano()
	in.RegTimestamp, in.UpTimestamp, in.RenewTimestamp, in.DirtyTimestamp, in.LatestTimestamp = now, now, now, now, now
	a.ins[in.Zone+"/"+in.Hostname] = &in
	s.bumpLocked(a)
}

// remove deletes an instance like a cancel or an eviction; the app goes
// when its last instance goes (spec 3.3.4). Reports whether it existed.
func (s *fakeStore) remove(env, appid, zone, hostname string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[env+"/"+appid]
	if a == nil || a.ins[zone+"/"+hostname] == nil {
		return false
	}
	delete(a.ins, zone+"/"+hostname)
	s.bumpLocked(a)
	if len(a.ins) == 0 {
		delete(s.apps, env+"/"+appid)
	}
	return true
}

func (s *fakeStore) get(env, appid, zone, hostname string) (client.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[env+"/"+appid]; a != nil {
		if in := a.ins[zone+"/"+hostname]; in != nil {
			return *in, true
		}
	}
	return client.Instance{}, false
}

func (s *fakeStore) latest(env, appid string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[env+"/"+appid]; a != nil {
		return a.latest
	}
	return 0
}

// infoLocked is the wire InstanceInfo of UP instances (nil: no UP instance).
func (a *fakeApp) infoLocked() map[string]any {
	zones := map[string][]*client.Instance{}
	n := 0
	for _, k := range slices.Sorted(maps.Keys(a.ins)) {
		in := a.ins[k]
		if in.Status != client.StatusUp {
			continue
		}
		zones[in.Zone] = append(zones[in.Zone], in)
		n++
	}
	if n == 0 {
		return nil
	}
	return map[string]any{"instances": zones, "latest_timestamp": a.latest}
}

// fault intercepts a request; returning true means it was answered.
type fault func(w http.ResponseWriter, r *http.Request) bool

// fakeNode is one discovery node speaking the wire protocol over a shared
// fakeStore, with fault injection and request accounting.
type fakeNode struct {
	t     testing.TB
	store *fakeStore
	srv   *httptest.Server
	addr  string
	hold  time.Duration
	fault atomic.Pointer[fault]
	quit  chan struct{}

	mu          sync.Mutex
	hits        map[string]int // path → requests (faulted ones included)
	forms       map[string][]url.Values
	inflight    map[string]int // polls in progress by hostname
	maxInflight int
}

func newFakeNode(t testing.TB, store *fakeStore) *fakeNode {
	t.Helper()
	n := &fakeNode{t: t, store: store, hold: 30 * time.Second, quit: make(chan struct{}),
		hits: map[string]int{}, forms: map[string][]url.Values{}, inflight: map[string]int{}}
	n.srv = httptest.NewServer(http.HandlerFunc(n.serve))
	n.addr = strings.TrimPrefix(n.srv.URL, "http://")
	t.Cleanup(func() {
		close(n.quit) // releases held polls and hanging faults
		n.srv.Close()
	})
	return n
}

func (n *fakeNode) setFault(f fault) {
	if f == nil {
		n.fault.Store(nil)
		return
	}
	n.fault.Store(&f)
}

func (n *fakeNode) count(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits[path]
}

func (n *fakeNode) requests(path string) []url.Values {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.forms[path])
}

func (n *fakeNode) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	form := r.Form
	if r.Method == http.MethodPost {
		form = r.PostForm
	}
	n.mu.Lock()
	n.hits[r.URL.Path]++
	n.forms[r.URL.Path] = append(n.forms[r.URL.Path], form)
	n.mu.Unlock()
	if f := n.fault.Load(); f != nil && (*f)(w, r) {
		return
	}
	switch r.URL.Path {
	case "/discovery/register":
		n.register(w, r)
	case "/discovery/renew":
		n.renew(w, r)
	case "/discovery/cancel":
		n.cancel(w, r)
	case "/discovery/fetch":
		n.fetch(w, r)
	case "/discovery/polls":
		n.polls(w, r)
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func code(w http.ResponseWriter, c int) {
	writeJSON(w, map[string]any{"code": c, "message": strconv.Itoa(c), "ttl": 1})
}

func (n *fakeNode) register(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || len(r.URL.RawQuery) > 0 {
		n.t.Errorf("register: want urlencoded body and empty query, got %q query %q", r.Header.Get("Content-Type"), r.URL.RawQuery)
	}
	st, _ := strconv.Atoi(f.Get("status"))
	in := client.Instance{Region: f.Get("region"), Zone: f.Get("zone"), Env: f.Get("env"), AppID: f.Get("appid"),
		Hostname: f.Get("hostname"), Addrs: f["addrs"], Version: f.Get("version"), Status: uint32(st)}
	if in.Zone == "" || in.Env == "" || in.AppID == "" || in.Hostname == "" || len(in.Addrs) == 0 || (st != 1 && st != 2) {
		code(w, -400)
		return
	}
	if m := f.Get("metadata"); m != "" {
		if err := json.Unmarshal([]byte(m), &in.Metadata); err != nil {
			code(w, -400)
			return
		}
	}
	n.store.put(in)
	code(w, 0)
}

func (n *fakeNode) renew(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if _, ok := n.store.get(f.Get("env"), f.Get("appid"), f.Get("zone"), f.Get("hostname")); !ok {
		code(w, -404)
		return
	}
	code(w, 0)
}

func (n *fakeNode) cancel(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if !n.store.remove(f.Get("env"), f.Get("appid"), f.Get("zone"), f.Get("hostname")) {
		code(w, -404)
		return
	}
	code(w, 0)
}

func (n *fakeNode) fetch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n.store.mu.Lock()
	defer n.store.mu.Unlock()
	a := n.store.apps[q.Get("env")+"/"+q.Get("appid")]
	if a == nil {
		writeJSON(w, map[string]any{"code": -404, "message": "-404", "ttl": 1, "data": nil})
		return
	}
	info := a.infoLocked()
	if info == nil {
		info = map[string]any{"instances": map[string]any{}, "latest_timestamp": a.latest}
	}
	writeJSON(w, map[string]any{"code": 0, "message": "0", "ttl": 1, "data": info})
}

func (n *fakeNode) polls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	env, host, appids, lts := q.Get("env"), q.Get("hostname"), q["appid"], q["latest_timestamp"]
	if env == "" || host == "" || len(appids) == 0 || len(appids) != len(lts) {
		code(w, -400)
		return
	}
	latest := make([]int64, len(lts))
	for i, s := range lts {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			code(w, -400)
			return
		}
		latest[i] = v
	}
	n.mu.Lock()
	n.inflight[host]++
	n.maxInflight = max(n.maxInflight, n.inflight[host])
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.inflight[host]--
		n.mu.Unlock()
	}()
	hold := n.hold
	if ms, err := strconv.Atoi(r.Header.Get("x1-bmspy-timeout")); err == nil && ms > 0 {
		hold = min(hold, time.Duration(ms)*time.Millisecond-20*time.Millisecond)
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()
	for {
		n.store.mu.Lock()
		data := map[string]any{}
		missing := []string{}
		for i, id := range appids {
			a := n.store.apps[env+"/"+id]
			if a == nil {
				missing = append(missing, id)
				continue
			}
			if latest[i] < a.latest {
				if info := a.infoLocked(); info != nil {
					data[id] = info
				}
			}
		}
		ch := n.store.notify
		n.store.mu.Unlock()
		if len(data) > 0 {
			writeJSON(w, map[string]any{"code": 0, "message": "0", "data": data, "error": map[string]any{"-404": missing}})
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			code(w, -304)
			return
		case <-r.Context().Done():
			return
		case <-n.quit:
			return
		}
	}
}

// Faults.

// faultDown makes every request fail at the transport level (the connection
// is closed without an answer), like a crashed node.
func faultDown(w http.ResponseWriter, r *http.Request) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
	return true
}

// faultBody answers requests to path with a fixed body (HTTP 200).
func faultBody(path, body string) fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(body))
		return true
	}
}

// faultHang never answers requests to path until the client gives up.
func (n *fakeNode) faultHang(path string) fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		select {
		case <-r.Context().Done():
		case <-n.quit:
		}
		return true
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

func hostsOf(s *client.Instances) []string {
	var out []string
	for _, in := range s.All() {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

func fmtHosts(s *client.Instances) string { return fmt.Sprint(hostsOf(s)) }
