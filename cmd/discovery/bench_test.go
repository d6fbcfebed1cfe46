package main

import (
	"encoding/json"
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
