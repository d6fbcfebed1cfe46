package api

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// The cached Date is net/http's format of the second asked for: the same
// bytes within a second, the next second's once it starts, and any second
// asked for after it (a clock stepped back) as that second.
func TestHTTPDate_FormatsTheSecondAskedFor(t *testing.T) {
	var d httpDate
	base := time.Date(2026, 12, 6, 21, 40, 59, 0, time.FixedZone("CET", 3600))
	for _, at := range []time.Duration{0, 999 * time.Millisecond, time.Second, 1500 * time.Millisecond, -time.Hour, 25 * time.Hour} {
		now := base.Add(at)
		got := string(d.append([]byte("Date: "), now))
		if want := "Date: " + now.UTC().Format(http.TimeFormat); got != want {
			t.Fatalf("%v: %q, want %q", at, got, want)
		}
	}
}

// Concurrent appends (every lean connection's goroutine) see a whole value
// (run with -race).
func TestHTTPDate_Concurrent(t *testing.T) {
	var d httpDate
	base := time.Unix(1_800_000_000, 0)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				now := base.Add(time.Duration(i*g) * time.Millisecond)
				if got, want := string(d.append(nil, now)), now.UTC().Format(http.TimeFormat); got != want {
					t.Errorf("%q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
