package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// Timers of the nodes of both kinds in these tests: short, so a test
// waits for seconds where production waits for half a minute.
const (
	nodeRenew      = 500 * time.Millisecond // own infra.discovery record, both kinds
	legacyPull     = time.Second            // cluster.legacy_pull_interval
	forwardTimeout = 2 * time.Second        // a legacy node's forwards
)

func legacyOpts() harness.LegacyOptions {
	return harness.LegacyOptions{RenewInterval: nodeRenew, ForwardTimeout: forwardTimeout}
}

// ourEnv is the environment of a node of ours beside the legacy nodes ls
// (none: a node without the setting), plus extra.
func ourEnv(ls []*harness.LegacyNode, extra map[string]string) map[string]string {
	e := map[string]string{
		"DISCOVERY_CLUSTER_RENEW_INTERVAL":        nodeRenew.String(),
		"DISCOVERY_CLUSTER_RETRY_MAX_BACKOFF":     "200ms",
		"DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL": "2s",
	}
	if len(ls) > 0 {
		e["DISCOVERY_CLUSTER_LEGACY_NODES"] = harness.LegacyAddrs(ls...)
		e["DISCOVERY_CLUSTER_LEGACY_PULL_INTERVAL"] = legacyPull.String()
	}
	maps.Copy(e, extra)
	return e
}

// startOurs starts our nodes named names one after the other, the first
// alone, the others joining its gossip, each beside the legacy nodes ls,
// and waits until the mixed cluster formed (waitFormed).
func startOurs(t *testing.T, names []string, ls []*harness.LegacyNode, extra map[string]string) []*harness.Node {
	t.Helper()
	var out []*harness.Node
	for _, name := range names {
		var join []string
		if len(out) > 0 {
			join = []string{out[0].AdvertisedGossip}
		}
		out = append(out, harness.StartNode(t, harness.Options{Hostname: name, Join: join, ExtraEnv: ourEnv(ls, extra)}))
	}
	waitFormed(t, out, ls)
	return out
}

// expect reports err, or else how got differs from want.
func expect[T any](what string, got T, err error, ok bool, exp T) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !ok {
		return fmt.Errorf("%s: %v, want %v", what, got, exp)
	}
	return nil
}

// waitFormed waits until our nodes list exactly each other in
// /discovery/nodes (gossip), every node of both kinds holds the
// infra.discovery records of all of them, and every legacy node forwards
// to all of them (its node list, learned from those records).
func waitFormed(t *testing.T, ours []*harness.Node, ls []*harness.LegacyNode) time.Duration {
	t.Helper()
	var mine, all []string
	for _, n := range ours {
		mine = append(mine, n.AdvertisedHTTP)
	}
	all = append(slices.Clone(mine), harness.LegacyAddrList(ls...)...)
	slices.Sort(mine)
	slices.Sort(all)
	return testkit.Eventually(t, 20*time.Second, "mixed cluster formed", func() error {
		var errs []error
		for _, n := range ours {
			got, err := harness.NodeAddrs(n, true)
			errs = append(errs, expect("ours "+n.Name+" gossip nodes", got, err, slices.Equal(got, mine), mine))
			got, err = harness.InfraAddrs(n)
			errs = append(errs, expect("ours "+n.Name+" infra.discovery", got, err, slices.Equal(got, all), all))
		}
		for _, l := range ls {
			got, err := l.InfraAddrs()
			errs = append(errs, expect("legacy "+l.Name+" infra.discovery", got, err, slices.Equal(got, all), all))
		}
		errs = append(errs, harness.CheckLegacyFormed(ls, all))
		return errors.Join(errs...)
	})
}

// srv is a node of either kind as the tests reach it.
type srv struct {
	Name   string
	Addr   string // advertised HTTP host:port
	Legacy bool
	C      *harness.Client
}

func ourSrv(n *harness.Node) srv          { return srv{n.Name, n.AdvertisedHTTP, false, n.Client} }
func legacySrv(l *harness.LegacyNode) srv { return srv{l.Name, l.HTTP, true, l.Client} }

func (s srv) String() string {
	if s.Legacy {
		return "legacy " + s.Name + " (" + s.Addr + ")"
	}
	return "ours " + s.Name + " (" + s.Addr + ")"
}

func srvs(ours []*harness.Node, ls []*harness.LegacyNode) []srv {
	var out []srv
	for _, l := range ls {
		out = append(out, legacySrv(l))
	}
	for _, n := range ours {
		out = append(out, ourSrv(n))
	}
	return out
}

// kindOf names the kind of the node at addr among servers.
func kindOf(servers []srv, addr string) (srv, bool) {
	for _, s := range servers {
		if s.Addr == addr {
			return s, true
		}
	}
	return srv{}, false
}

// ctxT is a context for one request of a test.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// instance is a two-address instance in the default zone and env.
func instance(app, host string, port int) harness.Instance {
	return harness.Instance{
		Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv, AppID: app, Hostname: host,
		Addrs: addrsFor(port), Status: 1, Version: "v1",
		Metadata: map[string]string{"weight": "10"},
	}
}

// addrsFor is the two addrs (grpc:// and http://) of a test instance.
func addrsFor(port int) []string {
	return []string{fmt.Sprintf("grpc://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port+1000)}
}

func mustOK(t testing.TB, what string) func(*harness.Envelope, error) {
	return func(e *harness.Envelope, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if e.Code != 0 {
			t.Fatalf("%s: code %d: %s", what, e.Code, e.Body)
		}
	}
}

// fetchApp returns what s holds of appid (all statuses, all zones) by
// hostname; an unknown appid (-404) is an empty map.
func fetchApp(s srv, appid string) (map[string]harness.Instance, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ii, e, err := s.C.Fetch(ctx, harness.DefaultEnv, appid, 3, "")
	if err != nil {
		if e != nil && e.Code == -404 {
			return map[string]harness.Instance{}, nil
		}
		return nil, fmt.Errorf("%s: fetch %s: %w", s, appid, err)
	}
	out := map[string]harness.Instance{}
	for _, in := range ii.All() {
		out[in.Hostname] = in
	}
	return out, nil
}

// checkHolds reports how what each server holds of appid differs from
// want (hostname -> addrs, in order); with exact, other hostnames are an
// error too.
func checkHolds(servers []srv, appid string, want map[string][]string, exact bool) error {
	var errs []error
	for _, s := range servers {
		got, err := fetchApp(s, appid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for h, addrs := range want {
			in, ok := got[h]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: %s/%s absent", s, appid, h))
			case !slices.Equal(in.Addrs, addrs):
				errs = append(errs, fmt.Errorf("%s: %s/%s addrs %q, want %q", s, appid, h, in.Addrs, addrs))
			}
		}
		if exact {
			for h := range got {
				if _, ok := want[h]; !ok {
					errs = append(errs, fmt.Errorf("%s: %s/%s present, want only %v", s, appid, h, slices.Sorted(maps.Keys(want))))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// sameContent reports how the servers' copies of each appid differ from
// the first server's.
func sameContent(servers []srv, appids ...string) error {
	names := make([]string, len(servers))
	for i, s := range servers {
		names[i] = s.String()
	}
	return harness.SameContent(names, func(i int, appid string) ([]harness.Instance, error) {
		m, err := fetchApp(servers[i], appid)
		return slices.Collect(maps.Values(m)), err
	}, appids...)
}

// metricOf returns the value of name{node="<node>"} in n's /metrics.
func metricOf(n *harness.Node, name, node string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := n.Client.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	prefix := name + `{node="` + node + `"} `
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s{node=%q} in /metrics", n.Name, name, node)
}

// hasLegacyMetrics reports whether n's /metrics has any per-legacy-node
// series.
func hasLegacyMetrics(n *harness.Node) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := n.Client.Metrics(ctx)
	if err != nil {
		return false, err
	}
	return strings.Contains(text, "\ndiscovery_legacy_up{"), nil
}

// ---- the real kratos v0.6.0 client (test/kratos, as test/compat runs it)

// kEvent is one JSON line of kratosclient.
type kEvent struct {
	Event     string          `json:"event"`
	AppID     string          `json:"appid"`
	Instances []wire.Instance `json:"instances"`
	LastTs    int64           `json:"latest_timestamp"`
	Nodes     []string        `json:"nodes"`
	Current   string          `json:"current"`
	Error     string          `json:"error"`
}

func (e kEvent) hosts() []string {
	var out []string
	for _, in := range e.Instances {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

func (e kEvent) byHost() map[string]wire.Instance {
	out := map[string]wire.Instance{}
	for _, in := range e.Instances {
		out[in.Hostname] = in
	}
	return out
}

// kclient is one kratosclient process.
type kclient struct {
	*harness.Process
	Host  string   // HOSTNAME: the instance's hostname, the poller's hostname
	App   string   // registrant: its appid
	Addrs []string // registrant: its addrs
	Seeds []string
	// Registered is when the registrant reported its register answered.
	Registered time.Time
}

// startKratos starts kratosclient with the environment kratos reads and
// waits until discovery.New returned (its first infra.discovery poll was
// answered with a node).
func startKratos(t *testing.T, bin, host string, seeds []string, args ...string) *kclient {
	t.Helper()
	env := map[string]string{
		"DISCOVERY_NODES": strings.Join(seeds, ","),
		"ZONE":            harness.DefaultZone,
		"DEPLOY_ENV":      harness.DefaultEnv,
		"REGION":          harness.DefaultRegion,
		"HOSTNAME":        host,
	}
	k := &kclient{Process: harness.StartProcess(t, "kratos-"+host, bin, args, env), Host: host, Seeds: seeds}
	k.wait(t, 0, 15*time.Second, "kratos client ready", func(e kEvent) bool { return e.Event == "ready" })
	return k
}

// registerKratos starts a kratos service that registers app with addrs
// (renewing every 30 s, cancelling when stopped) and waits for its
// register answer.
func registerKratos(t *testing.T, bin, host string, seeds []string, app string, addrs []string) *kclient {
	t.Helper()
	args := []string{"register", "--appid", app, "--version", "v1", "--metadata", `{"weight":"10"}`, "--hold"}
	for _, a := range addrs {
		args = append(args, "--addr", a)
	}
	k := startKratos(t, bin, host, seeds, args...)
	k.App, k.Addrs = app, addrs
	k.wait(t, 0, 15*time.Second, host+" registered", func(e kEvent) bool { return e.Event == "registered" })
	k.Registered = time.Now()
	return k
}

// watchKratos starts a kratos process watching apps (Build + Watch).
func watchKratos(t *testing.T, bin, host string, seeds []string, apps ...string) *kclient {
	t.Helper()
	args := []string{"watch"}
	for _, a := range apps {
		args = append(args, "--appid", a)
	}
	k := startKratos(t, bin, host, seeds, args...)
	k.wait(t, 0, 15*time.Second, host+" watching", func(e kEvent) bool { return e.Event == "watching" })
	return k
}

func (k *kclient) wait(t *testing.T, from int, timeout time.Duration, what string, match func(kEvent) bool) (int, kEvent) {
	t.Helper()
	return harness.WaitEvent(t, k.Process, from, timeout, what, func(e kEvent) bool {
		if e.Event == "error" {
			t.Fatalf("%s reported an error: %s", k, e.Error)
		}
		return match(e)
	})
}

// stop closes the client's stdin (as when its parent dies): a registrant
// cancels its instance; both exit.
func (k *kclient) stop(t *testing.T) {
	t.Helper()
	k.CloseStdin()
	if err := k.Wait(t, 15*time.Second); err != nil {
		t.Errorf("%s exit: %v", k, err)
	}
}

// events returns every event line so far.
func (k *kclient) events() []kEvent {
	var out []kEvent
	for _, l := range k.Lines() {
		var e kEvent
		if json.Unmarshal(l, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// instanceEvents returns every notification of app, in order.
func (k *kclient) instanceEvents(app string) []kEvent {
	var out []kEvent
	for _, e := range k.events() {
		if e.Event == "instances" && e.AppID == app {
			out = append(out, e)
		}
	}
	return out
}

// lastNodes is the client's last reported node list and current node.
func (k *kclient) lastNodes() (kEvent, bool) {
	var last kEvent
	ok := false
	for _, e := range k.events() {
		if e.Event == "nodes" {
			last, ok = e, true
		}
	}
	return last, ok
}

func (k *kclient) log() string {
	b, _ := os.ReadFile(k.LogPath)
	return string(b)
}

// kratos logs (stderr, Info) where each successful register and polls
// went; that is the one reliable witness of which node a client used.
var (
	registerLine = regexp.MustCompile(`register client\.Get\(http://([^/]+)/discovery/register\).* success`)
	pollsLine    = regexp.MustCompile(`successfully polls\(http://([^/]+)/discovery/polls\?([^)\s]*)\)`)
)

// answer is one successful polls answer as kratos logged it.
type answer struct {
	At   string // kratos' log time (local, ms)
	Node string
	Apps map[string]struct {
		Instances map[string][]wire.Instance `json:"instances"`
		LastTs    int64                      `json:"latest_timestamp"`
	}
}

var answerLine = regexp.MustCompile(`(?m)^INFO (\S+) .*successfully polls\(http://([^/]+)/discovery/polls\?[^)\s]*\) instances \((.*)\)$`)

// answers returns every successful polls answer, in order.
func (k *kclient) answers() []answer {
	var out []answer
	for _, m := range answerLine.FindAllStringSubmatch(k.log(), -1) {
		a := answer{At: m[1], Node: m[2]}
		if json.Unmarshal([]byte(m[3]), &a.Apps) == nil {
			out = append(out, a)
		}
	}
	return out
}

// sources aligns w's notifications of app with the polls answers behind
// them (kratos notifies in answer order, possibly skipping answers): the
// answer of notification i, or nil when none matches.
func (k *kclient) sources(app string) []*answer {
	evs := k.instanceEvents(app)
	as := k.answers()
	out := make([]*answer, len(evs))
	next := 0
	for i, e := range evs {
		for j := next; j < len(as); j++ {
			if v, ok := as[j].Apps[app]; ok && v.LastTs == e.LastTs {
				out[i], next = &as[j], j+1
				break
			}
		}
	}
	return out
}

func (a *answer) String() string {
	if a == nil {
		return "answer not in the log"
	}
	return "answered by " + a.Node + " at " + a.At
}

// time is when the answer arrived, by kratos' log clock (ms).
func (a *answer) time() (time.Time, bool) {
	if a == nil {
		return time.Time{}, false
	}
	at, err := time.Parse("01/02-15:04:05.000", a.At)
	return at, err == nil
}

// registeredOn returns the node of every successful register, in order
// (more than one: it re-registered after a renew answered -404).
func (k *kclient) registeredOn() []string {
	var out []string
	for _, m := range registerLine.FindAllStringSubmatch(k.log(), -1) {
		out = append(out, m[1])
	}
	return out
}

// pollsAnswered returns the node of every successful polls (code 0), in
// order.
func (k *kclient) pollsAnswered() []string {
	var out []string
	for _, m := range pollsLine.FindAllStringSubmatch(k.log(), -1) {
		out = append(out, m[1])
	}
	return out
}

// polledFrom returns the node that answered the client's last successful
// polls carrying app ("" if none yet).
func (k *kclient) polledFrom(app string) string {
	host := ""
	for _, m := range pollsLine.FindAllStringSubmatch(k.log(), -1) {
		q, err := url.ParseQuery(m[2])
		if err == nil && slices.Contains(q["appid"], app) {
			host = m[1]
		}
	}
	return host
}

// landRegistrants starts registrants (hostname prefix-N, N from first,
// seeds alternating over seeds) until one for each of wants registered on
// a node the want accepts, at most max of them; every registrant started
// stays up and is returned, in order.
func landRegistrants(t *testing.T, bin, prefix string, first int, seeds []string, app string, max int, wants ...func(addr string) bool) []*kclient {
	t.Helper()
	var out []*kclient
	met := make([]bool, len(wants))
	for i := 0; slices.Contains(met, false); i++ {
		if i == max {
			t.Fatalf("%d kratos registrants started, none landed where wanted (%v): each picks a random node of infra.discovery", max, met)
		}
		n := first + i
		k := registerKratos(t, bin, fmt.Sprintf("%s-%d", prefix, n), []string{seeds[i%len(seeds)]}, app, addrsFor(9000+n))
		on := k.registeredOn()
		if len(on) != 1 {
			t.Fatalf("%s: registers logged %v, want one", k, on)
		}
		for j, w := range wants {
			if !met[j] && w(on[0]) {
				met[j] = true
			}
		}
		out = append(out, k)
	}
	return out
}

// landWatcher starts watchers of apps (hostname prefix-N, seeded with
// seeds) until one polls a node want accepts (where its polls carrying
// apps[0] are answered; apps[0] must have an instance, so the first poll
// is answered at once); the others are stopped.
func landWatcher(t *testing.T, bin, prefix string, seeds []string, want func(addr string) bool, max int, apps ...string) (*kclient, string) {
	t.Helper()
	for i := range max {
		w := watchKratos(t, bin, fmt.Sprintf("%s-%d", prefix, i), seeds, apps...)
		var on string
		testkit.Eventually(t, 10*time.Second, w.Host+" polls answered", func() error {
			if on = w.polledFrom(apps[0]); on == "" {
				return errors.New("no successful polls carrying " + apps[0] + " yet")
			}
			return nil
		})
		if want(on) {
			return w, on
		}
		t.Logf("%s polls %s, not where wanted; another one", w.Host, on)
		w.stop(t)
	}
	t.Fatalf("%d kratos watchers started, none polls where wanted: each picks a random node of infra.discovery", max)
	return nil, ""
}

// ---- a client that renews more eagerly than kratos (every few hundred
// ms), so renews cross the kinds all the time.

// renewer keeps one instance alive: register once, then a renew every
// interval on the next of targets (round robin), re-registering there on
// -404 (as kratos does) and counting it.
type renewer struct {
	ins      harness.Instance
	targets  func() []srv
	ok       atomic.Int64
	notFound atomic.Int64
	failed   atomic.Int64

	mu     sync.Mutex
	notes  []string
	cancel context.CancelFunc
	done   chan struct{}
}

// startRenewer registers ins on first and renews it every interval
// until stopped (at the latest when the test ends).
func startRenewer(t *testing.T, ins harness.Instance, first srv, interval time.Duration, targets func() []srv) *renewer {
	t.Helper()
	mustOK(t, "register "+ins.Hostname+" on "+first.String())(first.C.Register(ctxT(t), ins))
	ctx, cancel := context.WithCancel(context.Background())
	r := &renewer{ins: ins, targets: targets, cancel: cancel, done: make(chan struct{})}
	go r.run(ctx, interval)
	t.Cleanup(r.stop)
	return r
}

func (r *renewer) run(ctx context.Context, interval time.Duration) {
	defer close(r.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ts := r.targets()
		if len(ts) == 0 {
			continue
		}
		s := ts[i%len(ts)]
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		e, err := s.C.Renew(cctx, r.ins)
		switch {
		case err != nil:
			r.failed.Add(1)
		case e.Code == 0:
			r.ok.Add(1)
		case e.Code == -404:
			r.notFound.Add(1)
			r.note(fmt.Sprintf("%s renew on %s: -404 at %s; re-registering", r.ins.Hostname, s, time.Now().Format("15:04:05.000")))
			if e, err := s.C.Register(cctx, r.ins); err != nil || e.Code != 0 {
				r.note(fmt.Sprintf("%s re-register on %s failed: %v %v", r.ins.Hostname, s, err, e))
			}
		default:
			r.failed.Add(1)
			r.note(fmt.Sprintf("%s renew on %s: code %d", r.ins.Hostname, s, e.Code))
		}
		cancel()
	}
}

func (r *renewer) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, s)
}

func (r *renewer) Notes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

func (r *renewer) stop() {
	r.cancel()
	<-r.done
}

// fleet is the set of live nodes clients may use, changed by the test as
// it adds and removes nodes. Safe for concurrent use.
type fleet struct {
	mu  sync.Mutex
	all []srv
}

func (f *fleet) add(s ...srv) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = append(f.all, s...)
}

func (f *fleet) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = slices.DeleteFunc(f.all, func(s srv) bool { return s.Name == name })
}

func (f *fleet) list() []srv {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.all)
}

func (f *fleet) addrs() []string {
	var out []string
	for _, s := range f.list() {
		out = append(out, s.Addr)
	}
	slices.Sort(out)
	return out
}

// ---- what kratos watchers saw

// ledger says, for each watcher, app and instance, from which notification
// on the instance must be in every notification (the test had confirmed
// it acknowledged and on every live node, and the watcher seeing it) and
// until which (its client was stopped). Safe for use from the test
// goroutine only.
type ledger struct {
	from, until map[*kclient]map[string]map[string]int
}

func newLedger() *ledger {
	return &ledger{from: map[*kclient]map[string]map[string]int{}, until: map[*kclient]map[string]map[string]int{}}
}

func set(m map[*kclient]map[string]map[string]int, w *kclient, app, host string, i int) {
	if m[w] == nil {
		m[w] = map[string]map[string]int{}
	}
	if m[w][app] == nil {
		m[w][app] = map[string]int{}
	}
	if _, ok := m[w][app][host]; !ok {
		m[w][app][host] = i
	}
}

// confirm records that w's notification i of app holds hosts, confirmed.
func (l *ledger) confirm(w *kclient, app string, i int, hosts ...string) {
	for _, h := range hosts {
		set(l.from, w, app, h, i)
	}
}

// leave records that host's client is stopped before w's notification i.
func (l *ledger) leave(w *kclient, app, host string, i int) { set(l.until, w, app, host, i) }

// flickerMax bounds a flicker: the instance must be back in the very next
// notification, answered at most this much later (replication between two
// nodes takes milliseconds; a copy missing for longer is not a flicker).
const flickerMax = 250 * time.Millisecond

// check walks w's whole recorded history of app. Once seen, an instance
// must be in every later notification (until its client left). A
// notification without it is a violation, unless it came before the
// test confirmed the instance everywhere, the one before held it and the
// very next one, answered within flickerMax, holds it again: a flicker
// (the watcher moved to a node the registration had not reached yet; see
// the runbook test).
func (l *ledger) check(w *kclient, app string) (violations, flickers []string) {
	return checkHistory(w.Host, app, w.instanceEvents(app), w.sources(app), l.from[w][app], l.until[w][app])
}

// checkHistory is check on one watcher's notifications evs of app, src
// their answers, from/until the ledger's indices by hostname.
func checkHistory(watcher, app string, evs []kEvent, src []*answer, from, until map[string]int) (violations, flickers []string) {
	seen := map[string]int{} // hostname -> first notification holding it
	for i, e := range evs {
		have := e.byHost()
		for _, h := range slices.Sorted(maps.Keys(seen)) {
			if _, ok := have[h]; ok {
				continue
			}
			if u, ok := until[h]; ok && i >= u {
				continue
			}
			back := -1
			for j := i + 1; j < len(evs) && back < 0; j++ {
				if _, ok := evs[j].byHost()[h]; ok {
					back = j
				}
			}
			missing, okM := src[i].time()
			msg := fmt.Sprintf("watcher %s: %s/%s (seen since notification %d) missing from notification %d (latest_timestamp %d, holds %v; %s; the one before %s)",
				watcher, app, h, seen[h], i, e.LastTs, e.hosts(), src[i], src[i-1])
			gap := time.Duration(-1)
			if back >= 0 {
				if again, ok := src[back].time(); ok && okM {
					gap = again.Sub(missing)
				}
				msg += fmt.Sprintf(", back in notification %d (%s, %s later)", back, src[back], gap)
			} else {
				msg += ", never back"
			}
			_, before := evs[i-1].byHost()[h] // the gap starts here
			f, confirmed := from[h]
			if (confirmed && i > f) || !before || back != i+1 || gap < 0 || gap > flickerMax {
				violations = append(violations, msg)
			} else {
				flickers = append(flickers, msg+"; before the test had confirmed it everywhere")
			}
		}
		for h := range have {
			if _, ok := seen[h]; !ok {
				seen[h] = i
			}
		}
	}
	return violations, flickers
}

// lastIndex is the index of w's last notification of app (-1: none).
func lastIndex(w *kclient, app string) int { return len(w.instanceEvents(app)) - 1 }

// instancesOf matches a notification of app holding exactly hosts.
func instancesOf(app string, hosts ...string) func(kEvent) bool {
	hosts = slices.Sorted(slices.Values(hosts))
	return func(e kEvent) bool {
		return e.Event == "instances" && e.AppID == app && slices.Equal(e.hosts(), hosts)
	}
}

// seesExactly reports how w's current view of app differs from want
// (hostname -> addrs; nil addrs: any).
func seesExactly(w *kclient, app string, want map[string][]string) error {
	_, err := sees(w, app, want, true)
	return err
}

// sees is seesExactly that, unless exact, allows other instances; it
// returns the index of the notification it checked.
func sees(w *kclient, app string, want map[string][]string, exact bool) (int, error) {
	evs := w.instanceEvents(app)
	if len(evs) == 0 {
		return -1, fmt.Errorf("%s: no notification of %s yet", w.Host, app)
	}
	ev := evs[len(evs)-1]
	got := ev.byHost()
	var errs []error
	for h, addrs := range want {
		in, ok := got[h]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s does not see %s/%s (sees %v)", w.Host, app, h, ev.hosts()))
		case addrs != nil && !slices.Equal(in.Addrs, addrs):
			errs = append(errs, fmt.Errorf("%s sees %s/%s with addrs %q, want %q", w.Host, app, h, in.Addrs, addrs))
		}
	}
	for h := range got {
		if _, ok := want[h]; !ok && exact {
			errs = append(errs, fmt.Errorf("%s sees %s/%s, want only %v", w.Host, app, h, slices.Sorted(maps.Keys(want))))
		}
	}
	return len(evs) - 1, errors.Join(errs...)
}

// seeAll waits until every watcher's current view of app is want (exact,
// or at least want) and records that in led: from then on each of those
// instances must be in every notification.
func seeAll(t *testing.T, led *ledger, watchers []*kclient, app string, want map[string][]string, exact bool, timeout time.Duration, what string) {
	t.Helper()
	testkit.Eventually(t, timeout, what, func() error {
		idx := map[*kclient]int{}
		var errs []error
		for _, w := range watchers {
			i, err := sees(w, app, want, exact)
			idx[w] = i
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for w, i := range idx {
			led.confirm(w, app, i, slices.Collect(maps.Keys(want))...)
		}
		return nil
	})
}

// strictWatch (MIGRATION_STRICT_WATCH=1) fails flickers too: the strict
// reading of "a watcher never sees a live instance disappear".
var strictWatch = os.Getenv("MIGRATION_STRICT_WATCH") == "1"

// checkLedger fails t for every violation in the watchers' histories and
// logs every flicker (fails it with MIGRATION_STRICT_WATCH=1); it returns
// the number of notifications checked and of flickers.
func checkLedger(t *testing.T, led *ledger, watchers []*kclient, apps ...string) (events, flickers int) {
	t.Helper()
	for _, w := range watchers {
		for _, app := range apps {
			events += len(w.instanceEvents(app))
			v, f := led.check(w, app)
			for _, m := range v {
				t.Error("DISAPPEARED " + m)
			}
			for _, m := range f {
				if strictWatch {
					t.Error("FLICKER (MIGRATION_STRICT_WATCH=1) " + m)
				} else {
					t.Log("FLICKER " + m)
				}
			}
			flickers += len(f)
		}
	}
	return events, flickers
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// checkHoldsMaybe is checkHolds with nil addrs meaning "any addrs".
func checkHoldsMaybe(servers []srv, app string, want map[string][]string) error {
	var errs []error
	for _, s := range servers {
		got, err := fetchApp(s, app)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var have []string
		for h, in := range got {
			have = append(have, h)
			if addrs, ok := want[h]; ok && addrs != nil && !slices.Equal(in.Addrs, addrs) {
				errs = append(errs, fmt.Errorf("%s: %s/%s addrs %q, want %q", s, app, h, in.Addrs, addrs))
			}
		}
		sort.Strings(have)
		if w := slices.Sorted(maps.Keys(want)); !slices.Equal(have, w) {
			errs = append(errs, fmt.Errorf("%s: %s holds %v, want %v", s, app, have, w))
		}
	}
	return errors.Join(errs...)
}

// infraIs reports the servers whose infra.discovery records (http addrs)
// are not exactly want.
func infraIs(servers []srv, want []string) []error {
	var errs []error
	for _, s := range servers {
		m, err := fetchApp(s, harness.InfraAppID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var got []string
		for _, in := range m {
			for _, a := range in.Addrs {
				if hp, ok := strings.CutPrefix(a, "http://"); ok {
					got = append(got, hp)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s: infra.discovery %v, want %v", s, got, want))
		}
	}
	return errs
}
