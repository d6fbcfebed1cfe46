package client

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/discovery-go/discovery/api/wire"
)

func TestNodeSet_FailedMovesOncePerNode(t *testing.T) {
	n := newNodeSet([]string{"a:1", "b:1", "c:1"})
	first := n.current()
	next, switched := n.failed(first)
	if !switched || next == first {
		t.Fatalf("failed(%s) = %s, %v", first, next, switched)
	}
	// A second failure report about the node already left does not move.
	if again, switched := n.failed(first); switched || again != next {
		t.Fatalf("stale failure moved the client: %s %v", again, switched)
	}
	// Wraps around the whole list.
	seen := map[string]bool{first: true}
	for range 3 {
		cur := n.current()
		seen[cur] = true
		n.failed(cur)
	}
	if len(seen) != 3 || n.current() != next {
		t.Fatalf("rotation visited %v, now at %s", seen, n.current())
	}
	single := newNodeSet([]string{"a:1"})
	if _, switched := single.failed("a:1"); switched {
		t.Fatal("a single node cannot switch")
	}
}

func TestNodeSet_SetLearned(t *testing.T) {
	n := newNodeSet([]string{"seed:1"})
	if n.setLearned(nil, nil) {
		t.Fatal("an empty learned list replaced the seeds")
	}
	if !n.setLearned([]string{"s1:1", "s2:1", "s1:1"}, []string{"o1:1", "s2:1"}) {
		t.Fatal("no change reported")
	}
	l := n.snapshot()
	if !slices.Equal(sortedCopy(l[:2]), []string{"s1:1", "s2:1"}) || l[2] != "o1:1" || l[3] != "seed:1" || len(l) != 4 {
		t.Fatalf("list = %v, want same zone, other zones, seed", l)
	}
	if cur := n.current(); cur != l[0] {
		t.Fatalf("current %s, want the first same-zone node %s", cur, l[0])
	}
	// Same sets in another order: no change, no reshuffle.
	if n.setLearned([]string{"s2:1", "s1:1"}, []string{"o1:1"}) {
		t.Fatal("reordered identical list reported as a change")
	}
	// The current node stays when it is still preferred.
	cur := n.current()
	n.setLearned([]string{"s1:1", "s2:1", "s3:1"}, nil)
	if n.current() != cur {
		t.Fatalf("current moved from %s to %s", cur, n.current())
	}
	// It leaves a node that is gone.
	other := "s1:1"
	if cur == "s1:1" {
		other = "s2:1"
	}
	n.setLearned([]string{other}, []string{"o1:1"})
	if n.current() != other {
		t.Fatalf("current = %s, want %s", n.current(), other)
	}
	// A current node of another zone gives way to a same-zone one.
	n.setLearned(nil, []string{"o1:1"})
	if n.current() != "o1:1" {
		t.Fatalf("current = %s", n.current())
	}
	n.setLearned([]string{"s9:1"}, []string{"o1:1"})
	if n.current() != "s9:1" {
		t.Fatalf("current = %s, want the same-zone node", n.current())
	}
}

func TestNodesFromInfra(t *testing.T) {
	info := &Instances{Zones: map[string][]Instance{
		"z1": {
			{Status: StatusUp, Addrs: []string{"http://10.0.0.1:7171", "grpc://10.0.0.1:9000"}},
			{Status: StatusWaiting, Addrs: []string{"http://10.0.0.9:7171"}},
			{Status: StatusUp, Addrs: []string{"http://0.0.0.0:7171", "http://[::]:7171", "http://host", "https://10.0.0.8:443", "::bad"}},
		},
		"z2": {{Status: StatusUp, Addrs: []string{"http://node.z2:7171"}}},
	}}
	same, other := nodesFromInfra(info, "z1", "http")
	if !slices.Equal(same, []string{"10.0.0.1:7171"}) || !slices.Equal(other, []string{"node.z2:7171"}) {
		t.Fatalf("same %v other %v", same, other)
	}
	if same, other := nodesFromInfra(info, "z1", "https"); !slices.Equal(same, []string{"10.0.0.8:443"}) || len(other) != 0 {
		t.Fatalf("https: same %v other %v", same, other)
	}
}

func TestDecodeInfo(t *testing.T) {
	ok := `{"instances":{"z1":[{"region":"r","zone":"z1","env":"e","appid":"a","hostname":"h","addrs":["grpc://1.1.1.1:1"],"version":"v","metadata":{"k":"v"},"status":1,"reg_timestamp":1,"up_timestamp":2,"renew_timestamp":3,"dirty_timestamp":4,"latest_timestamp":5}],"z2":[]},"latest_timestamp":7,"scheduler":{"clients":{}}}`
	s, err := decodeInfo("a", json.RawMessage(ok))
	if err != nil {
		t.Fatal(err)
	}
	if s.LatestTimestamp != 7 || len(s.Zones) != 1 || s.Zones["z1"][0].Metadata["k"] != "v" || s.Zones["z1"][0].DirtyTimestamp != 4 {
		t.Fatalf("decoded %+v (empty zones must be dropped)", s)
	}
	for _, bad := range []string{
		`null`, ``, `[]`, `{"instances":{}}`, `{"instances":{},"latest_timestamp":-1}`,
		`{"instances":{},"latest_timestamp":"5"}`, `{"instances":{"z":[null]},"latest_timestamp":5}`,
		`{"instances":{"z":[{"status":-1}]},"latest_timestamp":5}`, `{"instances":{"z":[{"status":1.5}]},"latest_timestamp":5}`,
		`{"instances":{"z":[{"metadata":[]}]},"latest_timestamp":5}`, `{"instances":{"z":[{"addrs":[1]}]},"latest_timestamp":5}`,
		`{"instances":{"z":[{"latest_timestamp":1e30}]},"latest_timestamp":5}`,
	} {
		if _, err := decodeInfo("a", json.RawMessage(bad)); !errors.Is(err, ErrBadResponse) {
			t.Errorf("decodeInfo(%s) = %v, want ErrBadResponse", bad, err)
		}
	}
}

func TestInstances_SameContentIgnoresTimestampsAndOrder(t *testing.T) {
	a := &Instances{Zones: map[string][]Instance{"z": {
		{Hostname: "h1", Addrs: []string{"x"}, RenewTimestamp: 1}, {Hostname: "h2", Addrs: []string{"y"}},
	}}}
	b := &Instances{Zones: map[string][]Instance{"z": {
		{Hostname: "h2", Addrs: []string{"y"}, RegTimestamp: 9}, {Hostname: "h1", Addrs: []string{"x"}, RenewTimestamp: 2},
	}}}
	if !a.sameContent(b) {
		t.Fatal("same instances in another order with other timestamps differ")
	}
	b.Zones["z"][0].Metadata = map[string]string{"weight": "5"}
	if a.sameContent(b) {
		t.Fatal("metadata change not seen")
	}
}

func FuzzDecodePolls(f *testing.F) {
	f.Add(`{"code":0,"message":"0","data":{"a":{"instances":{"z":[{"appid":"a","hostname":"h","addrs":["grpc://1.1.1.1:1"],"status":1}]},"latest_timestamp":5}},"error":{"-404":["b"]}}`)
	f.Add(`{"code":-304}`)
	f.Add(`{"code":0,"data":{"a":null}}`)
	f.Fuzz(func(t *testing.T, body string) {
		env, err := wire.DecodeEnvelope([]byte(body))
		if err != nil {
			return
		}
		ans, err := decodePolls(env, map[string]bool{"a": true, "b": true})
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		for id, info := range ans.changed {
			if id != "a" && id != "b" || info.LatestTimestamp <= 0 {
				t.Fatalf("accepted %s with latest %d", id, info.LatestTimestamp)
			}
			for _, l := range info.Zones {
				if len(l) == 0 {
					t.Fatal("empty zone kept")
				}
			}
		}
	})
}
