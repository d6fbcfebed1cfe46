package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// soak reports whether the long runs are enabled (DISCOVERY_SOAK=1).
func soak() bool { return os.Getenv("DISCOVERY_SOAK") == "1" }

// ctxT is a context for one request of a test.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// instance returns an instance in the harness' default zone and env.
func instance(appid, hostname string, addrs ...string) harness.Instance {
	return harness.Instance{
		Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv,
		AppID: appid, Hostname: hostname, Addrs: addrs, Status: 1,
	}
}

// mustOK returns a check that fails the test unless the call succeeded with
// code 0: mustOK(t, "register")(c.Register(ctx, in)).
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

// instances returns n's instances of appid (all statuses, all zones) by
// hostname; an unknown appid (-404) is an empty map.
func instances(n *harness.Node, env, appid string) (map[string]harness.Instance, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ii, e, err := n.Client.Fetch(ctx, env, appid, 3, "")
	if err != nil {
		if e != nil && e.Code == -404 {
			return map[string]harness.Instance{}, nil
		}
		return nil, fmt.Errorf("%s: fetch %s: %w", n.Name, appid, err)
	}
	out := map[string]harness.Instance{}
	for _, in := range ii.All() {
		out[in.Hostname] = in
	}
	return out, nil
}

// hostSet returns the sorted hostnames n holds for appid.
func hostSet(n *harness.Node, env, appid string) ([]string, error) {
	m, err := instances(n, env, appid)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(m)), nil
}

// wantHosts checks that every node holds exactly want for appid.
func wantHosts(nodes []*harness.Node, env, appid string, want []string) error {
	want = slices.Sorted(slices.Values(want))
	var errs []error
	for _, n := range nodes {
		got, err := hostSet(n, env, appid)
		if err != nil {
			errs = append(errs, err)
		} else if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s %s: got %v, want %v", n.Name, appid, got, want))
		}
	}
	return errors.Join(errs...)
}

// sameContent checks that every node holds the same instances (content and
// dirty timestamp) for each appid.
func sameContent(nodes []*harness.Node, env string, appids ...string) error {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return harness.SameContent(names, func(i int, appid string) ([]harness.Instance, error) {
		m, err := instances(nodes[i], env, appid)
		return slices.Collect(maps.Values(m)), err
	}, appids...)
}

// loadClient is one instance kept alive by a client that behaves like kratos
// but more eagerly: it talks to one preferred node, moves to the next node
// on a transport error or an unexpected code (and retries at once), and
// re-registers when a renew answers -404.
type loadClient struct {
	ins   harness.Instance
	nodes func() []*harness.Node // current generation of each node
	idx   int

	acked      atomic.Bool  // a register was answered 0 at least once
	lastOKFrom atomic.Int64 // start time (UnixNano) of the last successful register/renew
	ops        atomic.Int64
	failovers  atomic.Int64
	reregs     atomic.Int64
}

// call runs op against the current node, failing over through all nodes
// (twice) before giving up.
func (lc *loadClient) call(ctx context.Context, op func(ctx context.Context, c *harness.Client) (*harness.Envelope, error)) (*harness.Envelope, error) {
	var last error
	nodes := lc.nodes()
	for range 2 * len(nodes) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n := nodes[lc.idx%len(nodes)]
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		e, err := op(cctx, n.Client)
		cancel()
		if err == nil && (e.Code == 0 || e.Code == -404) {
			return e, nil
		}
		if err == nil {
			err = fmt.Errorf("code %d", e.Code)
		}
		last = fmt.Errorf("%s: %w", n.Name, err)
		lc.idx++
		lc.failovers.Add(1)
	}
	return nil, last
}

func (lc *loadClient) register(ctx context.Context) error {
	start := time.Now().UnixNano()
	e, err := lc.call(ctx, func(ctx context.Context, c *harness.Client) (*harness.Envelope, error) {
		return c.Register(ctx, lc.ins)
	})
	if err != nil {
		return err
	}
	if e.Code != 0 {
		return fmt.Errorf("register: code %d", e.Code)
	}
	lc.acked.Store(true)
	lc.lastOKFrom.Store(start)
	lc.ops.Add(1)
	return nil
}

// renew renews, re-registering on -404 (spec 8.3).
func (lc *loadClient) renew(ctx context.Context) error {
	start := time.Now().UnixNano()
	e, err := lc.call(ctx, func(ctx context.Context, c *harness.Client) (*harness.Envelope, error) {
		return c.Renew(ctx, lc.ins)
	})
	if err != nil {
		return err
	}
	if e.Code == -404 {
		lc.reregs.Add(1)
		return lc.register(ctx)
	}
	lc.lastOKFrom.Store(start)
	lc.ops.Add(1)
	return nil
}

// load runs a set of loadClients until stopped.
type load struct {
	clients []*loadClient
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errMu   sync.Mutex
	errs    []error
}

// startLoad registers count instances of appid (hostnames prefix-NN) and
// renews each every interval, through the nodes nodes() returns (called for
// every operation, so restarted nodes are followed). With spread, client i
// prefers node i%len; without, every client starts on the first node.
func startLoad(t testing.TB, nodes func() []*harness.Node, appid, prefix string, count int, interval time.Duration, spread bool) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for i := range count {
		lc := &loadClient{
			ins:   instance(appid, fmt.Sprintf("%s-%02d", prefix, i), fmt.Sprintf("grpc://127.0.0.1:%d", 20000+i), fmt.Sprintf("http://127.0.0.1:%d", 30000+i)),
			nodes: nodes,
		}
		if spread {
			lc.idx = i % len(nodes())
		}
		l.clients = append(l.clients, lc)
	}
	for _, lc := range l.clients {
		l.wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for ctx.Err() == nil {
				var err error
				if !lc.acked.Load() {
					err = lc.register(ctx)
				} else {
					err = lc.renew(ctx)
				}
				if err != nil && ctx.Err() == nil {
					l.errMu.Lock()
					l.errs = append(l.errs, fmt.Errorf("%s: %w", lc.ins.Hostname, err))
					l.errMu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

// stop ends the load and waits for its goroutines.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// waitAllAcked waits until every client's registration was acknowledged.
func (l *load) waitAllAcked(t testing.TB, timeout time.Duration) {
	t.Helper()
	testkit.Eventually(t, timeout, "every load client registered", func() error {
		n := 0
		for _, lc := range l.clients {
			if lc.acked.Load() {
				n++
			}
		}
		if n != len(l.clients) {
			return fmt.Errorf("%d of %d acknowledged", n, len(l.clients))
		}
		return nil
	})
}

// roundSince reports clients whose last successful operation started before t.
func (l *load) behind(since time.Time) []string {
	var out []string
	for _, lc := range l.clients {
		if lc.lastOKFrom.Load() <= since.UnixNano() {
			out = append(out, lc.ins.Hostname)
		}
	}
	return out
}

func (l *load) hostnames() []string {
	var out []string
	for _, lc := range l.clients {
		if lc.acked.Load() {
			out = append(out, lc.ins.Hostname)
		}
	}
	return out
}

func (l *load) stats() (ops, failovers, reregs int64, errs []error) {
	for _, lc := range l.clients {
		ops += lc.ops.Load()
		failovers += lc.failovers.Load()
		reregs += lc.reregs.Load()
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return ops, failovers, reregs, slices.Clone(l.errs)
}

// repairs returns discovery_antientropy_repairs_total summed over nodes.
func repairs(t *testing.T, nodes []*harness.Node) float64 {
	t.Helper()
	var sum float64
	for _, n := range nodes {
		v, err := n.Client.MetricSum(ctxT(t), "discovery_antientropy_repairs_total")
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		sum += v
	}
	return sum
}
