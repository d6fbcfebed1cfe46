package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
)

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
