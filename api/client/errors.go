package client

import "errors"

// Errors returned by the client. Calls wrap them with %w and add detail (node,
// operation, server message), so test with errors.Is.
var (
	// ErrNoNodes: the configuration names no discovery node (Config.Nodes
	// empty and DISCOVERY_NODES unset).
	ErrNoNodes = errors.New("discovery: no discovery nodes configured")
	// ErrInvalidConfig: a Config field is invalid; the message names it.
	ErrInvalidConfig = errors.New("discovery: invalid config")
	// ErrInvalidInstance: Register was given an instance the server would
	// reject (no appid, no addrs, bad addr, bad status, ...).
	ErrInvalidInstance = errors.New("discovery: invalid instance")
	// ErrAlreadyRegistered: this client already holds a registration with the
	// same (env, appid, zone, hostname).
	ErrAlreadyRegistered = errors.New("discovery: instance already registered by this client")
	// ErrClosed: the Client (or the Watcher) was closed.
	ErrClosed = errors.New("discovery: client closed")
	// ErrNotFound: the server answered -404 (unknown appid on Fetch, unknown
	// instance on renew/cancel).
	ErrNotFound = errors.New("discovery: not found")
	// ErrRejected: the server answered -400 (it considers the request
	// malformed). Not retried.
	ErrRejected = errors.New("discovery: request rejected")
	// ErrUnavailable: no node served the request: transport error, timeout,
	// HTTP status other than 200, or an error code such as -503. Retried on
	// other nodes before it is returned.
	ErrUnavailable = errors.New("discovery: node unavailable")
	// ErrBadResponse: a node answered something that is not a valid protocol
	// answer (bad JSON, wrong types, latest_timestamp 0, body over
	// Config.MaxResponseBytes). Treated like ErrUnavailable for failover.
	ErrBadResponse = errors.New("discovery: bad response")
)

// permanent reports whether retrying on another node is pointless.
func permanent(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrRejected) || errors.Is(err, ErrClosed)
}
