package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

// TestSoak_KillRestartPartitionCycles runs only with DISCOVERY_SOAK=1
// (duration DISCOVERY_SOAK_DURATION, default 5m): under a steady client
// load, it repeatedly SIGKILLs and restarts a random node, or cuts one off
// and heals it, and after each cycle checks that every node holds every
// acknowledged instance with the same content and that the cluster formed
// again. Each cycle's figures are logged.
func TestSoak_KillRestartPartitionCycles(t *testing.T) {
	if !soak() {
		t.Skip("soak run: set DISCOVERY_SOAK=1")
	}
	dur := 5 * time.Minute
	if v := os.Getenv("DISCOVERY_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("DISCOVERY_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	const antiEntropy = 5 * time.Second
	c := harness.StartCluster(t, 3, harness.Options{
		Faults: true,
		ExtraEnv: map[string]string{
			"DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL": antiEntropy.String(),
			"DISCOVERY_CLUSTER_REJOIN_INTERVAL":       "1s",
		},
	})
	env := harness.DefaultEnv
	const app = "e2e.soak"
	l := startLoad(t, c.Nodes, app, "soak", 100, 200*time.Millisecond, true)
	l.waitAllAcked(t, 30*time.Second)

	end := time.Now().Add(dur)
	for cycle := 1; time.Now().Before(end); cycle++ {
		victim := c.Node(rand.N(3))
		start := time.Now()
		if rand.N(2) == 0 {
			c.Kill(t, victim)
			out := testkit.Eventually(t, 30*time.Second, "dead node out", func() error { return c.CheckFormed(c.Others(victim)) })
			nn := c.Restart(t, victim)
			ready := time.Since(nn.Started())
			formed := c.WaitFormed(t, 30*time.Second)
			t.Logf("cycle %d kill %s: out after %.1fs, restart ready %.2fs, formed +%.2fs", cycle, victim.Name, out.Seconds(), ready.Seconds(), formed.Seconds())
		} else {
			// Heal as soon as the majority dropped the cut node, whatever the
			// cut node itself concluded so far: a realistic, racy heal.
			c.Isolate(t, victim)
			detect := testkit.Eventually(t, 40*time.Second, "partition seen", func() error { return c.CheckFormed(c.Others(victim)) })
			c.Heal()
			healed := c.WaitFormed(t, 40*time.Second)
			t.Logf("cycle %d isolate %s: seen after %.1fs, re-formed %.2fs after heal", cycle, victim.Name, detect.Seconds(), healed.Seconds())
			if limit := 2*antiEntropy + 5*time.Second; healed > limit {
				t.Errorf("cycle %d: re-formed %.1fs after heal, more than %s (anti-entropy %s + margin)", cycle, healed.Seconds(), limit, antiEntropy)
			}
		}
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("cycle %d: every acknowledged instance everywhere", cycle), func() error {
			if b := l.behind(start); len(b) > 0 {
				return fmt.Errorf("%d clients without a round this cycle", len(b))
			}
			if err := wantHosts(c.Live(), env, app, l.hostnames()); err != nil {
				return err
			}
			return sameContent(c.Live(), env, app)
		})
	}
	ops, fo, rr, errs := l.stats()
	t.Logf("soak: %d ops, %d failovers, %d re-registers, %d client errors", ops, fo, rr, len(errs))
}
