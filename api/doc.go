// Package api is the HTTP layer of a discovery node (echo v4): the
// bilibili/discovery wire protocol plus monitoring routes.
//
// Routes (spec 2.1, 10.2, 10.3):
//
//	POST /discovery/register /renew /cancel /set     writes, never gated
//	GET  /discovery/fetch/all /fetch /fetchs /nodes  reads, gated while not ready
//	GET  /discovery/poll /polls                      long polls, gated, held ≤ PollHold
//	GET  /discovery/prometheus/targets               Prometheus http_sd (bare array)
//	ANY  /discovery/internal/*                       Deps.Internal (peer protocol), if set
//	GET  /metrics /healthz /readyz
//
// Every protocol answer is HTTP 200 with the discovery envelope; a wrong
// method is 405 and an unknown path 404, both text/plain (spec 2.1.2).
//
// Parameters are read from the query string and, for POST, an urlencoded or
// multipart body (body values first). Binding is a set of plain functions
// over url.Values (params.go) so it can be fuzzed; every -400 message starts
// with the parameter's name.
//
// Long polls: registry.Poll checks and arms a per-request waiter atomically;
// the handler waits on the waiter, a hold timer (PollHold, shortened by the
// client's x1-bmspy-timeout), the request context (a client that goes away
// releases its waiter at once) and the server's shutdown context (Shutdown
// answers every parked poll -304 at once). A wake-up re-polls through
// registry.Repoll, so the appid that woke the request is always answered
// (spec 5.3.2). Poll answers are written as framing plus the registry's
// shared per-app payload bytes, which are neither copied nor re-encoded per
// poller. At most Config.MaxPollers polls are parked; beyond that -503.
//
// Connections: Serve reads a plain connection itself from its first byte
// (lean.go, leanwrite.go): kratos' writes and the peers' replicate
// requests are run through the same echo handler and framed as
// net/http frames them, polls are parked in one small goroutine each, and
// anything else goes to net/http with the bytes read. Config.LeanWrites and
// Config.LeanPolls switch this off; HTTPS is always served by net/http.
//
// Writes with replication=false are forwarded through Deps.Replicator after
// local success; replicated writes (replication=true) never are.
package api
