// Package legacy is an in-process fake of the ORIGINAL bilibili/discovery
// node (the "legacy node"), written from the protocol spec
// (../shared/spec/discovery-protocol.md beside this repository) for
// mixed-cluster migration tests. It behaves on the wire like the spec says
// the original does, including the defects that matter for interop:
//
//   - D3: set does not advance the app latest_timestamp (held polls are still
//     woken, with the unchanged timestamp).
//   - D4: forwarded registers carry addrs comma-joined in one value, and a
//     receiving legacy node stores that as one addr (it never splits).
//   - D5: register with status > 2 answers an empty HTTP 200 body.
//   - D6: metadata values that are not strings are stored as "".
//   - D7: set applies hostname by hostname, merges metadata, and is forwarded
//     even when it failed locally.
//   - D8: gated reads answer HTTP 200 code -500 while in init-protect.
//   - D9: writes are answered only after every forward finished (each bounded
//     by Config.ForwardTimeout).
//   - D10: the startup sync is one-shot and skips protected peers; while it
//     runs the listener resets every connection (the original is not
//     listening yet).
//   - D11: eviction does not lower the expected renews.
//   - D12: /discovery/nodes shows peers LOST until a forwarded renew to them
//     returns anything but -500 (a transport error counts as UP).
//   - D17: a changed app with no UP instance is answered at once with empty
//     zone lists.
//
// Deliberately not reproduced: D1/D2/D15 (every held poll has its own waiter,
// armed atomically with the check, and /discovery/poll only watches its first
// appid) and D14 (a disconnected poller is released at once). D13 (no input
// limits) and D16 (advertising the listen address) are reproduced as they come:
// there are no limits, and Advertise defaults to the bound address.
package legacy
