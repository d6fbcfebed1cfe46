package legacy

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestSet(t *testing.T) {
	a := start(t, Config{})
	b := start(t, Config{})
	w := newWire(t)
	// Make B a peer of A through a record, as a real cluster would.
	w.postCode(a.Addr(), "/discovery/register", with(reg(AppIDDiscovery, "b", "http://"+b.Addr()), "replication", "true"), 0)
	testkit.Eventually(t, 5*time.Second, "A learns B", func() error {
		if same, _ := a.Peers(); !slices.Contains(same, b.Addr()) {
			return fmt.Errorf("peers %v", same)
		}
		return nil
	})
	w.postCode(a.Addr(), "/discovery/register", with(reg("set.svc", "h1", "grpc://x:1"), "metadata", `{"a":"1","b":"2"}`, "version", "v1"), 0)
	w.postCode(a.Addr(), "/discovery/register", reg("set.svc", "h2", "grpc://x:2"), 0)
	before, _ := a.Instance(testEnv, "set.svc", testZone, "h1")
	l0 := latestOf(t, a, "set.svc")

	// A held poll is woken by the set, but the app latest_timestamp does not
	// move (D3).
	ch := heldPoll(t.Context(), w, a.Addr(), nil, "env", testEnv, "appid", "set.svc", "latest_timestamp", l0, "hostname", "c1")
	waitHeld(t, a, "set.svc", 1)
	w.postCode(a.Addr(), "/discovery/set", form("zone", testZone, "env", testEnv, "appid", "set.svc", "hostname", "h1",
		"status", "2", "metadata", `{"b":"3","c":"4"}`, "version", "v9", "set_timestamp", "1234"), 0)
	var pb pollsBody
	if ans := <-ch; json.Unmarshal(ans.Body, &pb) != nil || pb.Data["set.svc"] == nil || fmt.Sprint(pb.Data["set.svc"].LatestTimestamp) != l0 {
		t.Fatalf("poll woken by set: %s (latest before %s)", ans.Body, l0)
	}
	if l := latestOf(t, a, "set.svc"); l != l0 {
		t.Fatalf("set advanced the app latest: %s -> %s", l0, l)
	}
	for _, n := range []*Node{a, b} {
		got, _ := n.Instance(testEnv, "set.svc", testZone, "h1")
		// D7: metadata merged, not replaced.
		if !cmp.Equal(got.Metadata, map[string]string{"a": "1", "b": "3", "c": "4"}) || got.Status != 2 || got.Version != "v1" ||
			got.DirtyTimestamp != 1234 || got.LatestTimestamp != 1234 {
			t.Fatalf("on %s after set: %+v", n.Addr(), got)
		}
		if n == a && got.UpTimestamp != before.UpTimestamp {
			t.Fatal("status 2 changed up_timestamp")
		}
	}

	w.postCode(a.Addr(), "/discovery/set", form("zone", testZone, "env", testEnv, "appid", "set.svc", "hostname", "h1", "status", "1", "set_timestamp", "5678"), 0)
	if got, _ := a.Instance(testEnv, "set.svc", testZone, "h1"); got.UpTimestamp != 5678 || got.Status != 1 {
		t.Fatalf("status 1: %+v", got)
	}

	// D7: hostnames are applied in order; an unknown one fails after the
	// earlier ones changed.
	w.postCode(a.Addr(), "/discovery/set", form("zone", testZone, "env", testEnv, "appid", "set.svc", "hostname", "h2", "hostname", "nobody",
		"status", "2", "status", "2"), -400)
	if got, _ := a.Instance(testEnv, "set.svc", testZone, "h2"); got.Status != 2 {
		t.Fatalf("h2 not changed before the failure: %+v", got)
	}
	for _, v := range []map[string]string{
		{"hostname": "h1", "status": "3"},
		{"hostname": "h1", "metadata": "{"},
		{"status": "1"}, // no hostname
		{"hostname": "h1", "status": "x"},
	} {
		f := form("zone", testZone, "env", testEnv, "appid", "set.svc")
		for k, val := range v {
			f.Set(k, val)
		}
		w.postCode(a.Addr(), "/discovery/set", f, -400)
	}
	w.postCode(a.Addr(), "/discovery/set", form("zone", testZone, "env", testEnv, "appid", "set.svc", "hostname", "h1", "hostname", "h2", "status", "1"), -400)
	w.postCode(a.Addr(), "/discovery/set", form("zone", testZone, "env", testEnv, "appid", "nope", "hostname", "h1", "status", "1"), -400)
}
