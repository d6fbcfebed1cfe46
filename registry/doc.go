// Package registry is the in-memory service registry of a discovery node:
// instances keyed by env → appid → zone → hostname, their timestamps, the
// dirty-timestamp conflict rules used between peers, eviction with
// self-preservation, and the long-poll waiters.
//
// It has no network code. Time comes from an injected Clock so tests can move
// past the 30 s / 90 s / 60 s / 15 min windows without sleeping. All methods of
// *Registry are safe for concurrent use; every Instance it returns is a copy
// the caller may keep and modify.
package registry
