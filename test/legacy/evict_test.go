package legacy

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestEviction(t *testing.T) {
	// Own record renewed every 5 ms: far more renews per window than the
	// threshold, so the guard does not protect.
	n := start(t, Config{RenewInterval: 5 * time.Millisecond, EvictInterval: 100 * time.Millisecond, EvictAfter: 200 * time.Millisecond})
	w := newWire(t)
	w.postCode(n.Addr(), "/discovery/register", reg("dead.svc", "h1", "grpc://x:1"), 0)
	w.postCode(n.Addr(), "/discovery/register", reg("dead.svc", "h2", "grpc://x:2"), 0)

	// Size 3 allows one eviction per scan, so the first eviction leaves one
	// instance and wakes the held poll with it.
	ch := heldPoll(t.Context(), w, n.Addr(), nil, "env", testEnv, "appid", "dead.svc", "latest_timestamp", latestOf(t, n, "dead.svc"), "hostname", "c1")
	waitHeld(t, n, "dead.svc", 1)
	var b pollsBody
	if a := <-ch; json.Unmarshal(a.Body, &b) != nil || b.Data["dead.svc"] == nil || len(b.Data["dead.svc"].Instances[testZone]) != 1 {
		t.Fatalf("poll woken by eviction: %s", a.Body)
	}
	testkit.Eventually(t, 5*time.Second, "both evicted", func() error {
		if _, code := w.fetchInfo(n.Addr(), "dead.svc"); code != -404 {
			return fmt.Errorf("fetch code %d", code)
		}
		return nil
	})
	st := n.Stats()
	if st.Evicted != 2 || st.GuardProtected {
		t.Fatalf("stats %+v", st)
	}
	// D11: eviction does not lower the expected renews (self + 2 registers).
	if st.ExpectedRenews != 6 {
		t.Fatalf("expected renews %d, want 6", st.ExpectedRenews)
	}
	if _, ok := n.Instance(testEnv, AppIDDiscovery, testZone, n.Hostname()); !ok {
		t.Fatal("own record evicted although renewed")
	}
}

func TestGuardProtects(t *testing.T) {
	// No renews at all (own renew interval 1 h): E = 4, T = 3, R = 0, so the
	// node is protected and only instances silent longer than
	// ProtectedEvictAfter go.
	evictAfter := 50 * time.Millisecond
	n := start(t, Config{RenewInterval: time.Hour, EvictInterval: 30 * time.Millisecond, EvictAfter: evictAfter, ProtectedEvictAfter: 1500 * time.Millisecond})
	w := newWire(t)
	w.postCode(n.Addr(), "/discovery/register", reg("quiet.svc", "h1", "grpc://x:1"), 0)
	registered := time.Now()

	testkit.Eventually(t, 5*time.Second, "scans past EvictAfter", func() error {
		if time.Since(registered) < 3*evictAfter {
			return fmt.Errorf("too young")
		}
		return nil
	})
	s0 := n.Stats().Scans
	testkit.Eventually(t, 5*time.Second, "two more scans", func() error {
		if st := n.Stats(); st.Scans < s0+2 {
			return fmt.Errorf("scans %d", st.Scans)
		}
		return nil
	})
	st := n.Stats()
	if !st.GuardProtected || st.Evicted != 0 {
		t.Fatalf("want protected and nothing evicted: %+v", st)
	}
	if _, ok := n.Instance(testEnv, "quiet.svc", testZone, "h1"); !ok {
		t.Fatal("evicted while protected")
	}
	testkit.Eventually(t, 10*time.Second, "evicted after the protected ceiling", func() error {
		if _, ok := n.Instance(testEnv, "quiet.svc", testZone, "h1"); ok {
			return fmt.Errorf("still there: %+v", n.Stats())
		}
		return nil
	})
}
