//go:build containers

package containers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// loader registers new instances and renews acknowledged ones through a set
// of nodes, like a fleet of kratos clients: a renew answered -404 is
// followed by a register, a node that fails is skipped for the next.
// It records every instance some node acknowledged (code 0).
type loader struct {
	t      *testing.T
	c      *cluster
	appid  string
	nodes  []string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	acked       map[string]instance
	order       []string
	registering bool
	stats       struct{ registers, renews, reregisters, failures int }
}

// startLoad runs workers goroutines, each at most rate ops/s, until stop.
// It registers at most max instances in total.
func startLoad(t *testing.T, c *cluster, appid string, nodes []string, workers int, rate float64, max int) *loader {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loader{t: t, c: c, appid: appid, nodes: nodes, cancel: cancel, acked: map[string]instance{}, registering: true}
	clients := map[string]*apiClient{}
	for _, n := range nodes {
		clients[n] = c.api(n)
	}
	next := 0
	var nextMu sync.Mutex
	newHost := func() (string, bool) {
		nextMu.Lock()
		defer nextMu.Unlock()
		if next >= max {
			return "", false
		}
		next++
		return fmt.Sprintf("%s-%04d", appid, next), true
	}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			node := w % len(nodes)
			renewIdx := w
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				cl := clients[nodes[node]]
				opCtx, opCancel := context.WithTimeout(ctx, 3*time.Second)
				var err error
				if i%2 == 0 && l.isRegistering() {
					if h, ok := newHost(); ok {
						in := newInstance(appid, h, fmt.Sprintf("grpc://10.%d.%d.%d:9000", w, (i/250)%250, i%250))
						var code int
						code, err = cl.register(opCtx, in)
						if err == nil && code == 0 {
							l.ack(in)
						}
					}
				} else if in, ok := l.pick(renewIdx); ok {
					renewIdx += workers
					var code int
					code, err = cl.renew(opCtx, in)
					l.count(func() { l.stats.renews++ })
					if err == nil && code == -404 {
						// As kratos does: the node lost it, register again.
						_, err = cl.register(opCtx, in)
						l.count(func() { l.stats.reregisters++ })
					}
				}
				opCancel()
				if err != nil {
					l.count(func() { l.stats.failures++ })
					node = (node + 1) % len(nodes) // fail over
				}
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *loader) isRegistering() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.registering
}

func (l *loader) ack(in instance) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.acked[in.Hostname]; !ok {
		l.order = append(l.order, in.Hostname)
	}
	l.acked[in.Hostname] = in
	l.stats.registers++
}

func (l *loader) pick(i int) (instance, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.order) == 0 {
		return instance{}, false
	}
	return l.acked[l.order[i%len(l.order)]], true
}

func (l *loader) count(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
}

// stopRegistering freezes the set of instances; renews go on.
func (l *loader) stopRegistering() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.registering = false
}

func (l *loader) stop() {
	l.cancel()
	l.wg.Wait()
}

// ackedSet returns the acknowledged hostnames.
func (l *loader) ackedSet() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.acked))
	for h := range l.acked {
		out[h] = true
	}
	return out
}

func (l *loader) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *loader) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d acknowledged registers, %d renews (%d re-registers after -404), %d failed calls",
		l.stats.registers, l.stats.renews, l.stats.reregisters, l.stats.failures)
}

// missingOn returns acknowledged instances node does not hold.
func missingOn(ctx context.Context, c *cluster, node, appid string, want map[string]bool) ([]string, error) {
	got, err := c.api(node).fetch(ctx, appid)
	if err != nil {
		return nil, err
	}
	var missing []string
	for h := range want {
		if _, ok := got[h]; !ok {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

// waitHolds waits until every node in nodes holds every instance in want.
func waitHolds(t *testing.T, c *cluster, nodes []string, appid string, want map[string]bool, timeout time.Duration) time.Duration {
	t.Helper()
	return testkit.Poll(t, timeout, 250*time.Millisecond, fmt.Sprintf("%v hold all %d acknowledged %s instances", nodes, len(want), appid), func() error {
		state := ""
		ok := true
		for _, n := range nodes {
			missing, err := missingOn(t.Context(), c, n, appid, want)
			if err != nil {
				ok = false
				state += fmt.Sprintf("%s: %v; ", n, err)
				continue
			}
			if len(missing) > 0 {
				ok = false
				state += fmt.Sprintf("%s misses %d (e.g. %s); ", n, len(missing), missing[0])
			}
		}
		return testkit.State(ok, state)
	})
}
