// Package loadgen is the load generator behind `discovery bench`: it drives
// one or more discovery nodes over real HTTP (the wire protocol of
// the wire contract (../shared/spec/discovery-protocol.md) sections 2, 4 and 5, exactly as
// kratos clients send it) and reports throughput and latency percentiles.
//
// Scenarios:
//
//	register      POST /discovery/register (urlencoded body, repeated addrs,
//	              metadata JSON) of --instances instances over --appids appids
//	renew         registers the instances first (not timed), then times renews
//	fetchs        registers first, then times GET /discovery/fetchs of --batch appids
//	notify        parks --pollers long-polls (/discovery/polls, one connection
//	              each), waits until the node's discovery_http_parked_polls
//	              gauge shows them parked, makes one change (register) and
//	              records for every poll the time from the change's answer to
//	              the poll's answer
//	replication   writes on the first node, a poll parked on every other node
//	              before the write: lag from the write's answer to each poll's
//	              answer
//	cross-notify  like notify, polls parked on the other nodes, change made on
//	              the first node
//
// Next to each figure the report gives the CPU per operation of the nodes
// that run on this machine (found by their listening port in /proc) and of
// the tool itself, so that a node's limit can be told from the tool's on a
// shared machine; notify and cross-notify also give the local nodes' RSS
// with every poll of a round parked, per parked poll.
//
// Every loop ends by --count or --duration, every request has a timeout
// (--timeout, --poll-timeout), and cancelling the context stops the run with
// a partial report. The package speaks HTTP only: it imports no server
// package, sends traffic only to --nodes and never uses a proxy.
//
// Entry points: Main (flag parsing, report printing, exit code) for the
// command line, Run for callers holding a Config.
package loadgen
