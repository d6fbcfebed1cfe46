// Package harness runs discovery nodes as real processes for the
// multi-process tests in test/: it builds the binary once per test binary,
// starts nodes and clusters on ephemeral ports, kills, stops, restarts and
// partitions them, and speaks the wire protocol with plain net/http.
//
// Every package using it calls Main from TestMain:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
//	c := harness.StartCluster(t, 3, harness.Options{Faults: true})
//	n := c.Node(2)
//	c.Isolate(t, n)             // cut gossip and peer HTTP both ways
//	c.Heal()
//	c.Kill(t, n)                // SIGKILL
//	n = c.Restart(t, n)         // same identity, new ports, waits for /readyz
//	ii, _, err := n.Client.Fetch(ctx, harness.DefaultEnv, "app", 3, "")
//
// Node processes get their configuration from DISCOVERY_* variables only
// (the developer's own DISCOVERY_* are not inherited), write their listen
// addresses to --addr-file, and are ready when /readyz answers 200. Their
// stdout/stderr go to a file that is printed when the test fails.
//
// Waiting is done by polling conditions with a deadline (Eventually,
// Within); nothing sleeps to synchronise. Every process is killed, and every
// proxy and connection closed, by the test's cleanups; Main checks for
// leaked goroutines.
//
// Environment:
//
//	DISCOVERY_TEST_BINARY=path   use a prebuilt server binary
//	DISCOVERY_TEST_RACE=1        build the server with -race
//	DISCOVERY_TEST_LOGS=1        print node and helper logs even on success
//	DISCOVERY_TEST_LOG_DIR=dir   copy every node log to dir
//	DISCOVERY_TEST_FABRIC_DEBUG=1  print every fault-proxy decision
//
// Relay gives a test an address before the node behind it exists (e.g.
// cross-zone seeds, which each zone needs of the other).
//
// Partitions: see Fabric. Nodes started with Options.Faults advertise proxy
// addresses for gossip (UDP and TCP on one port) and peer HTTP; the proxies
// attribute each packet or connection to the node that sent it (UDP by its
// gossip source port, TCP through /proc) and drop what crosses a cut. The
// test itself always reaches every node directly.
package harness
