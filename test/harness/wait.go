package harness

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually re-checks its condition.
const PollInterval = 50 * time.Millisecond

// Eventually calls cond until it returns nil, and returns how long that
// took. If timeout passes first it fails the test with the last error, so a
// failure says what was still wrong. Use it instead of sleeping.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	d, err := Within(timeout, cond)
	if err != nil {
		tb.Fatalf("%s: not reached within %s: last: %v", what, timeout, err)
	}
	return d
}

// Within is Eventually without a test: it returns the time taken, or the
// last error if timeout passed first.
func Within(timeout time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), err
		}
		<-tick.C
	}
}
