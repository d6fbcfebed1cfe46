// Package registry is the in-memory service registry of a discovery node:
// instances keyed by env → appid → zone → hostname, their timestamps, the
// dirty-timestamp conflict rules used between peers, eviction with
// self-preservation, and the long-poll waiters.
//
// It has no network code. Time comes from an injected Clock so tests can move
// past the 30 s / 90 s / 60 s / 15 min windows without sleeping (ManualClock
// ships as ordinary code for other packages' tests). All methods of
// *Registry are safe for concurrent use; every Instance it returns is a copy
// the caller may keep and modify.
//
// Design notes:
//   - One RWMutex guards the tree. Content changes take it exclusively;
//     Renew, Fetch, Poll and the copy-out methods take it shared. Stored
//     records are immutable except the atomic renew_timestamp: a change
//     installs a new record. So Renew needs only the shared lock, and copies
//     and encodings are made after the lock is released.
//   - Poll checks and arms its waiter under the shared lock; writers detach
//     the waiters to wake under the exclusive lock, so no change falls in
//     between (spec 5.4.3). Waiters are indexed by (env, appid) in intrusive
//     lists, one waiter per request; a wake marks the appid that caused it,
//     so Repoll answers that appid whatever the client's latest_timestamp
//     (spec 5.3.2), and is a send on a capacity-1 channel made after the
//     writer released its locks: waking n waiters is O(n) once, and each
//     woken request then works in O(1) without queueing behind the writer or
//     each other (the shared answer is found without a lock).
//   - The answer (InstanceInfo JSON) of one app version, zone filter and
//     status mask is encoded once, outside the lock, and the same bytes go to
//     every poller and every fetch (FetchEncoded). A change drops the app's
//     encoded answers; a renew makes fetch (which shows renew_timestamp)
//     re-encode on its next call; a scan drops answers nobody asked for since
//     the previous scan.
//   - Memory: region, version and metadata are interned; zones of up to 8
//     instances use a slice instead of a map; strings from requests are
//     cloned so a request buffer is never retained.
package registry
