package main

import (
	"testing"
)

// The bench subcommand is the load tool a user runs against live nodes: a bad
// flag is a usage error, and a short register run against a real node
// succeeds and reports its throughput.
func TestBench_AgainstRealNode(t *testing.T) {
	runBin(t, baseEnv(), "bench", "register", "--concurrency", "0").want(t, exitUsage, nil, []string{"concurrency"})

	n := startNode(t, nil)
	runBin(t, baseEnv(), "bench", "register", "--nodes", n.HTTP, "--count", "200", "--concurrency", "4",
		"--appids", "2", "--instances", "50").want(t, exitOK, []string{"register", "ops/s"}, nil)
}
