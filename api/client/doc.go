// Package client is the Go SDK of the discovery service registry: it
// registers instances, watches appids and fetches instance sets over the
// bilibili/discovery HTTP protocol (the one kratos v0.6.0 speaks), and learns
// the cluster's node list by itself. The gRPC resolver built on it lives in
// package resolver.
//
// Contract:
//
//   - Share one Client per process. It is safe for concurrent use and runs a
//     single long-poll (GET /discovery/polls) that carries every watched
//     appid; watching a new appid restarts that request with the larger set.
//   - Close must be called. It cancels the registrations still held, ends
//     the watchers and waits for every goroutine the client started; until
//     then the client keeps a poll open and heartbeats its registrations.
//   - Every call that touches the network takes a context that bounds it,
//     including its retries; each single request also has its own timeout
//     (Config.RequestTimeout, or Config.PollTimeout for the poll) and each
//     answer body is capped (Config.MaxResponseBytes). Close makes calls in
//     progress return ErrClosed at once.
//   - Failover: any transport error, timeout, HTTP status other than 200,
//     malformed answer or unexpected error code moves the whole client to the
//     next node (nodes learned from infra.discovery, same zone first, then
//     other zones, then the configured seeds) and retries with exponential
//     backoff and jitter. The poll never loops hot: a failed poll or an
//     answer that carries no change is followed by a backoff.
//   - Errors are the Err* variables of this package, wrapped with %w and
//     detail; test them with errors.Is. Answers of the server about the
//     request itself (-400 ErrRejected, -404 ErrNotFound) are not retried.
//
// Values returned to callers (Instances, Instance) are copies the caller owns.
//
// Metrics (optional, WithRegisterer): discovery_client_polls_total{result},
// discovery_client_node_switches_total, discovery_client_renews_total{result},
// discovery_client_registrations_total{result}, discovery_client_nodes,
// discovery_client_watched_apps.
package client
