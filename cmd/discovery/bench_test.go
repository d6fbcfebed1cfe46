package main

import (
	"encoding/json"
	"math"
	"testing"
)

// The bench subcommand is the load tool a user runs against live nodes: a bad
// flag is a usage error, and a short register run against a real node
// succeeds and reports its throughput.
func TestBench_AgainstRealNode(t *testing.T) {
	runBin(t, baseEnv(), "bench", "register", "--concurrency", "0").want(t, exitUsage, nil, []string{"concurrency"})

	n := startNode(t, nil)
	runBin(t, baseEnv(), "bench", "register", "--nodes", n.HTTP, "--count", "200", "--concurrency", "4",
		"--appids", "2", "--instances", "50").want(t, exitOK, []string{"register", "ops/s", "cpu: nodes", "µs/op", "bench"}, nil)
	// --json carries the node's CPU per op (from /proc of the local node)
	// and the load tool's own.
	// 2 000 registers take well over the 10 ms tick of /proc's CPU times.
	r := runBin(t, baseEnv(), "bench", "register", "--nodes", n.HTTP, "--count", "2000", "--concurrency", "4",
		"--appids", "2", "--instances", "500", "--json")
	r.want(t, exitOK, nil, nil)
	var rep struct {
		CPU struct {
			Ops   int64 `json:"ops"`
			Nodes []struct {
				Addr string `json:"addr"`
				PID  int    `json:"pid"`
			} `json:"nodes"`
			NodeMicros  float64 `json:"node_us_per_op"`
			BenchMicros float64 `json:"bench_us_per_op"`
		} `json:"cpu"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if c := rep.CPU; c.Ops != 2000 || len(c.Nodes) != 1 || c.Nodes[0].PID != n.PID() || c.NodeMicros <= 0 || c.BenchMicros <= 0 {
		t.Fatalf("cpu report %+v (node pid %d)", c, n.PID())
	}
}

// bench notify reports the local node's RSS with every poll parked, per
// round, and the bytes per parked poll of the first round.
func TestBench_NotifyMemoryOfRealNode(t *testing.T) {
	n := startNode(t, nil)
	runBin(t, baseEnv(), "bench", "notify", "--nodes", n.HTTP, "--pollers", "50", "--concurrency", "8",
		"--count", "1", "--poll-timeout", "10s").want(t, exitOK, []string{"memory:", "B RSS per parked poll", "50 parked"}, nil)
	r := runBin(t, baseEnv(), "bench", "notify", "--nodes", n.HTTP, "--pollers", "200", "--concurrency", "16",
		"--count", "2", "--poll-timeout", "10s", "--json")
	r.want(t, exitOK, nil, nil)
	var rep struct {
		Memory struct {
			Parked int64 `json:"parked"`
			Nodes  []struct {
				PID       int     `json:"pid"`
				RSSBefore int64   `json:"rss_before_bytes"`
				RSSParked []int64 `json:"rss_parked_bytes"`
			} `json:"nodes"`
			PerPoll    float64 `json:"bytes_per_parked_poll"`
			MaxPerPoll float64 `json:"max_bytes_per_parked_poll"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	m := rep.Memory
	if m.Parked != 200 || len(m.Nodes) != 1 || m.Nodes[0].PID != n.PID() || m.Nodes[0].RSSBefore <= 0 || len(m.Nodes[0].RSSParked) != 2 {
		t.Fatalf("memory report %+v (node pid %d)", m, n.PID())
	}
	nd := m.Nodes[0]
	first := float64(nd.RSSParked[0]-nd.RSSBefore) / 200
	second := float64(nd.RSSParked[1]-nd.RSSBefore) / 200
	if math.Abs(m.PerPoll-first) > 1e-6 || math.Abs(m.MaxPerPoll-max(first, second)) > 1e-6 {
		t.Fatalf("per poll %v max %v, want %v and max(%v, %v)", m.PerPoll, m.MaxPerPoll, first, first, second)
	}
}
