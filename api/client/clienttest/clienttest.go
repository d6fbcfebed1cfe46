// Package clienttest provides a fake discovery node for tests of code that
// uses package client: an httptest server speaking the discovery wire
// protocol (register, renew, cancel, fetch, polls with long-poll holds) over
// a Store that several Nodes may share, like a replicated cluster, with fault
// injection (transport failure, fixed bodies, hanging requests) and request
// accounting. It is a test double, not a server: no eviction, no
// replication, no limits.
package clienttest

import (
	"encoding/json"
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

// Store is the registry shared by the nodes of a fake cluster, so that a
// client switching nodes sees the same data (as replication would give it),
// with latest_timestamps that are strictly increasing per app.
type Store struct {
	mu     sync.Mutex
	apps   map[string]*app // env/appid
	last   int64
	notify chan struct{}
}

type app struct {
	ins    map[string]*client.Instance // zone/hostname
	latest int64
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{apps: map[string]*app{}, notify: make(chan struct{})}
}

func (s *Store) bumpLocked(a *app) {
	s.last = max(s.last+1, time.Now().UnixNano())
	a.latest = s.last
	close(s.notify)
	s.notify = make(chan struct{})
}

// Put registers (or replaces) an instance as a register request would:
// status 0 becomes UP, all timestamps are now, the app version advances and
// held polls wake.
func (s *Store) Put(in client.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := in.Env + "/" + in.AppID
	a := s.apps[k]
	if a == nil {
		a = &app{ins: map[string]*client.Instance{}}
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

// Remove deletes an instance like a cancel or an eviction; the app goes
// when its last instance goes (spec 3.3.4). Reports whether it existed.
func (s *Store) Remove(env, appid, zone, hostname string) bool {
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

// Get returns a copy of a stored instance.
func (s *Store) Get(env, appid, zone, hostname string) (client.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[env+"/"+appid]; a != nil {
		if in := a.ins[zone+"/"+hostname]; in != nil {
			return *in, true
		}
	}
	return client.Instance{}, false
}

// Latest is the app latest_timestamp (0: unknown app).
func (s *Store) Latest(env, appid string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[env+"/"+appid]; a != nil {
		return a.latest
	}
	return 0
}

// infoLocked is the wire InstanceInfo of UP instances (nil: no UP instance).
func (a *app) infoLocked() map[string]any {
	zones := map[string][]*client.Instance{}
	n := 0
	for _, k := range sortedKeys(a.ins) {
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

// Fault intercepts a request before the protocol handler; returning true
// means it was answered.
type Fault func(w http.ResponseWriter, r *http.Request) bool

// Node is one discovery node speaking the wire protocol over a shared
// Store, with fault injection and request accounting.
type Node struct {
	t     testing.TB
	store *Store
	srv   *httptest.Server
	addr  string
	hold  atomic.Int64 // ns
	fault atomic.Pointer[Fault]
	quit  chan struct{}

	mu          sync.Mutex
	hits        map[string]int // path → requests (faulted ones included)
	forms       map[string][]url.Values
	inflight    map[string]int // polls in progress by hostname
	maxInflight int
}

// NewNode starts a node on 127.0.0.1 over store; t.Cleanup stops it (held
// polls and hanging faults are released first).
func NewNode(t testing.TB, store *Store) *Node {
	t.Helper()
	n := &Node{t: t, store: store, quit: make(chan struct{}),
		hits: map[string]int{}, forms: map[string][]url.Values{}, inflight: map[string]int{}}
	n.hold.Store(int64(30 * time.Second))
	n.srv = httptest.NewServer(http.HandlerFunc(n.serve))
	n.addr = strings.TrimPrefix(n.srv.URL, "http://")
	t.Cleanup(func() {
		close(n.quit) // releases held polls and hanging faults
		n.srv.Close()
	})
	return n
}

// SetFault installs f for every following request (nil removes it).
func (n *Node) SetFault(f Fault) {
	if f == nil {
		n.fault.Store(nil)
		return
	}
	n.fault.Store(&f)
}

// Addr is the node's host:port.
func (n *Node) Addr() string { return n.addr }

// SetHold sets how long a poll with nothing to answer is held before -304
// (default 30 s, as the real server; shortened by the x1-bmspy-timeout
// header like the real server does).
func (n *Node) SetHold(d time.Duration) { n.hold.Store(int64(d)) }

// Inflight is the number of polls from hostname being held right now.
func (n *Node) Inflight(hostname string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inflight[hostname]
}

// MaxInflight is the largest number of simultaneous polls seen from one
// hostname (a client must poll one request at a time).
func (n *Node) MaxInflight() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.maxInflight
}

// ResetMaxInflight restarts MaxInflight from the polls held now. A poll the
// client cancelled (to send a new appid at once) is still counted here
// until this server notices the closed connection, so a test resets after
// such an interruption.
func (n *Node) ResetMaxInflight() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.maxInflight = 0
	for _, v := range n.inflight {
		n.maxInflight = max(n.maxInflight, v)
	}
}

// Count is the number of requests to path, faulted ones included.
func (n *Node) Count(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits[path]
}

// Requests returns the parameters of every request to path, in order
// (query for GET, body for POST).
func (n *Node) Requests(path string) []url.Values {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.forms[path])
}

func (n *Node) serve(w http.ResponseWriter, r *http.Request) {
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

// WriteCode answers the standard envelope with code c and no data.
func WriteCode(w http.ResponseWriter, c int) {
	writeJSON(w, map[string]any{"code": c, "message": strconv.Itoa(c), "ttl": 1})
}

func (n *Node) register(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || len(r.URL.RawQuery) > 0 {
		n.t.Errorf("register: want urlencoded body and empty query, got %q query %q", r.Header.Get("Content-Type"), r.URL.RawQuery)
	}
	st, _ := strconv.Atoi(f.Get("status"))
	in := client.Instance{Region: f.Get("region"), Zone: f.Get("zone"), Env: f.Get("env"), AppID: f.Get("appid"),
		Hostname: f.Get("hostname"), Addrs: f["addrs"], Version: f.Get("version"), Status: uint32(st)}
	if in.Zone == "" || in.Env == "" || in.AppID == "" || in.Hostname == "" || len(in.Addrs) == 0 || (st != 1 && st != 2) {
		WriteCode(w, -400)
		return
	}
	if m := f.Get("metadata"); m != "" {
		if err := json.Unmarshal([]byte(m), &in.Metadata); err != nil {
			WriteCode(w, -400)
			return
		}
	}
	n.store.Put(in)
	WriteCode(w, 0)
}

func (n *Node) renew(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if _, ok := n.store.Get(f.Get("env"), f.Get("appid"), f.Get("zone"), f.Get("hostname")); !ok {
		WriteCode(w, -404)
		return
	}
	WriteCode(w, 0)
}

func (n *Node) cancel(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if !n.store.Remove(f.Get("env"), f.Get("appid"), f.Get("zone"), f.Get("hostname")) {
		WriteCode(w, -404)
		return
	}
	WriteCode(w, 0)
}

func (n *Node) fetch(w http.ResponseWriter, r *http.Request) {
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

func (n *Node) polls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	env, host, appids, lts := q.Get("env"), q.Get("hostname"), q["appid"], q["latest_timestamp"]
	if env == "" || host == "" || len(appids) == 0 || len(appids) != len(lts) {
		WriteCode(w, -400)
		return
	}
	latest := make([]int64, len(lts))
	for i, s := range lts {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			WriteCode(w, -400)
			return
		}
		latest[i] = v
	}
	n.mu.Lock()
	n.inflight[host]++
	n.maxInflight = max(n.maxInflight, n.inflight[host])
	n.mu.Unlock()
	// The poll stops counting before its answer is written: the client can
	// send its next poll only once it has the answer, so a count from a
	// deferred decrement would overlap with it on a new connection.
	var once sync.Once
	done := func() {
		once.Do(func() {
			n.mu.Lock()
			n.inflight[host]--
			n.mu.Unlock()
		})
	}
	defer done()
	hold := time.Duration(n.hold.Load())
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
			done()
			writeJSON(w, map[string]any{"code": 0, "message": "0", "data": data, "error": map[string]any{"-404": missing}})
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			done()
			WriteCode(w, -304)
			return
		case <-r.Context().Done():
			return
		case <-n.quit:
			return
		}
	}
}

// Faults.

// Down makes every request fail at the transport level (the connection
// is closed without an answer), like a crashed node.
func Down(w http.ResponseWriter, r *http.Request) bool {
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

// Body answers requests to path with a fixed body (HTTP 200).
func Body(path, body string) Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(body))
		return true
	}
}

// Hang never answers requests to path until the client gives up.
func (n *Node) Hang(path string) Fault {
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
