package legacy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// pollsBody is the map-shaped polls answer.
type pollsBody struct {
	Code  int                      `json:"code"`
	Data  map[string]*InstanceInfo `json:"data"`
	Error map[string][]string      `json:"error"`
}

// heldPoll runs one polls request in the background; the result arrives on
// the returned channel.
func heldPoll(ctx context.Context, w *wire, addr string, hdr map[string]string, kv ...string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		a, err := w.do(ctx, http.MethodGet, addr, "/discovery/polls", form(kv...), hdr)
		if err != nil {
			a.Code, a.Message = 1, err.Error()
		}
		ch <- a
	}()
	return ch
}

func waitHeld(t *testing.T, n *Node, appid string, want int) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "held polls on "+appid, func() error {
		if got := n.HeldPolls(testEnv, appid); got != want {
			return fmt.Errorf("%d held, want %d", got, want)
		}
		return nil
	})
}

func latestOf(t *testing.T, n *Node, appid string) string {
	t.Helper()
	l, ok := n.AppLatest(testEnv, appid)
	if !ok {
		t.Fatalf("%s unknown", appid)
	}
	return fmt.Sprint(l)
}

func TestPolls(t *testing.T) {
	n := start(t, Config{PollHold: 5 * time.Second})
	w := newWire(t)
	addr := n.Addr()
	w.postCode(addr, "/discovery/register", reg("p.svc", "h1", "grpc://x:1"), 0)

	t.Run("wake on register", func(t *testing.T) {
		l := latestOf(t, n, "p.svc")
		ch := heldPoll(t.Context(), w, addr, nil, "env", testEnv, "appid", "p.svc", "appid", "p.missing", "latest_timestamp", l, "latest_timestamp", "0", "hostname", "c1")
		waitHeld(t, n, "p.svc", 1)
		w.postCode(addr, "/discovery/register", reg("p.svc", "h2", "grpc://x:2"), 0)
		a := <-ch
		var b pollsBody
		if err := json.Unmarshal(a.Body, &b); err != nil || b.Code != 0 || a.has("ttl") {
			t.Fatalf("woken answer: %s", a.Body)
		}
		info := b.Data["p.svc"]
		if info == nil || len(info.Instances[testZone]) != 2 || fmt.Sprint(info.LatestTimestamp) == l || len(b.Data) != 1 {
			t.Fatalf("woken data: %s", a.Body)
		}
		if got := b.Error["-404"]; len(got) != 1 || got[0] != "p.missing" {
			t.Fatalf("woken error: %s", a.Body)
		}
		waitHeld(t, n, "p.svc", 0)
	})

	t.Run("wake on first register of a missing appid", func(t *testing.T) {
		ch := heldPoll(t.Context(), w, addr, nil, "env", testEnv, "appid", "p.new", "latest_timestamp", "0", "hostname", "c1")
		waitHeld(t, n, "p.new", 1)
		w.postCode(addr, "/discovery/register", reg("p.new", "h1", "grpc://x:1"), 0)
		var b pollsBody
		if a := <-ch; json.Unmarshal(a.Body, &b) != nil || b.Data["p.new"] == nil {
			t.Fatalf("answer: %s", a.Body)
		}
	})

	t.Run("wake on cancel", func(t *testing.T) {
		ch := heldPoll(t.Context(), w, addr, nil, "env", testEnv, "appid", "p.svc", "latest_timestamp", latestOf(t, n, "p.svc"), "hostname", "c1")
		waitHeld(t, n, "p.svc", 1)
		w.postCode(addr, "/discovery/cancel", key("p.svc", "h2"), 0)
		var b pollsBody
		if a := <-ch; json.Unmarshal(a.Body, &b) != nil || b.Data["p.svc"] == nil || len(b.Data["p.svc"].Instances[testZone]) != 1 {
			t.Fatalf("answer: %s", a.Body)
		}
	})

	t.Run("timeout header and renew does not wake", func(t *testing.T) {
		begin := time.Now()
		ch := heldPoll(t.Context(), w, addr, map[string]string{"x1-bmspy-timeout": "400"},
			"env", testEnv, "appid", "p.svc", "latest_timestamp", latestOf(t, n, "p.svc"), "hostname", "c1")
		waitHeld(t, n, "p.svc", 1)
		w.postCode(addr, "/discovery/renew", key("p.svc", "h1"), 0)
		a := <-ch
		checkStd(t, a, -304, false)
		if d := time.Since(begin); d < 350*time.Millisecond || d > 3*time.Second {
			t.Fatalf("held %s, want about 380ms", d)
		}
	})

	t.Run("disconnect releases the waiter", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ch := heldPoll(ctx, w, addr, nil, "env", testEnv, "appid", "p.svc", "latest_timestamp", latestOf(t, n, "p.svc"), "hostname", "c1")
		waitHeld(t, n, "p.svc", 1)
		cancel()
		<-ch
		waitHeld(t, n, "p.svc", 0)
	})

	t.Run("poll", func(t *testing.T) {
		ch := make(chan answer, 1)
		q := form("env", testEnv, "appid", "p.svc", "latest_timestamp", latestOf(t, n, "p.svc"), "hostname", "c1")
		go func() {
			a, _ := w.do(t.Context(), http.MethodGet, addr, "/discovery/poll", q, nil)
			ch <- a
		}()
		waitHeld(t, n, "p.svc", 1)
		w.postCode(addr, "/discovery/register", reg("p.svc", "h3", "grpc://x:3"), 0)
		a := <-ch
		checkStd(t, a, 0, true)
		var info InstanceInfo
		if err := json.Unmarshal(a.Data, &info); err != nil || len(info.Instances[testZone]) != 2 {
			t.Fatalf("poll answer %s", a.Body)
		}
	})

	t.Run("waiting only is answered at once (D17)", func(t *testing.T) {
		w.postCode(addr, "/discovery/register", with(reg("p.wait", "h1", "grpc://x:1"), "status", "2"), 0)
		a := w.get(addr, "/discovery/polls", form("env", testEnv, "appid", "p.wait", "latest_timestamp", "0", "hostname", "c1"))
		var b pollsBody
		if json.Unmarshal(a.Body, &b) != nil || b.Code != 0 || b.Data["p.wait"] == nil || len(b.Data["p.wait"].Instances[testZone]) != 0 {
			t.Fatalf("answer %s", a.Body)
		}
	})
}

func TestPollHold(t *testing.T) {
	n := start(t, Config{PollHold: 300 * time.Millisecond})
	w := newWire(t)
	w.postCode(n.Addr(), "/discovery/register", reg("h.svc", "h1", "grpc://x:1"), 0)
	begin := time.Now()
	a := w.get(n.Addr(), "/discovery/polls", form("env", testEnv, "appid", "h.svc", "latest_timestamp", latestOf(t, n, "h.svc"), "hostname", "c1"))
	checkStd(t, a, -304, false)
	if d := time.Since(begin); d < 250*time.Millisecond {
		t.Fatalf("held only %s", d)
	}
	// A timestamp from the future is "unchanged" as well.
	a = w.get(n.Addr(), "/discovery/poll", form("env", testEnv, "appid", "h.svc", "latest_timestamp", "9000000000000000000", "hostname", "c1"))
	checkStd(t, a, -304, false)
}
