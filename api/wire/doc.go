// Package wire is the one definition of the discovery protocol's data:
// the instance and its JSON form (spec 3.1), the per-appid InstanceInfo
// (3.4), the answer envelope and its codes (2.4, 2.5), the node list entry
// (4.10), and the messages of the peer protocol between nodes of this
// server (spec 10.1: replicate batches, snapshot streams, digests), with
// their encoders and decoders.
//
// The server (registry, syncup, api), the Go SDK, the test harness and the
// tests all use these types, so a field is added in one place. It is its
// own module with no dependency beyond the standard library, so the SDK
// can import it without the server's dependency graph.
//
// Encoders append to a byte slice and write exactly what encoding/json
// writes for the same value (same key order, same escaping), except where a
// function's doc says otherwise (answers carry addrs [] and metadata {}
// instead of null). Decoders of peer messages take a fast path for the
// JSON these encoders write and fall back to encoding/json for anything
// else, with the same result; FuzzFastDecode checks that they agree.
// Nothing here trusts its input: malformed data is an error, never a
// panic, and structural checks (Validate methods) name the offending
// field. Semantic checks (status values, limits, timestamps) belong to the
// registry, which applies them whatever path a record came by.
package wire
