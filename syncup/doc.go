// Package syncup is the cluster layer of a discovery node: gossip
// membership (hashicorp/memberlist), replication of client writes to the
// other nodes, startup sync, anti-entropy and the node's own
// infra.discovery record (spec section 7).
//
// # Components
//
// Cluster only wires these; each has one owner (the Cluster), its own lock
// naming what it guards, and its own start and stop:
//
//	membership  membership.go  memberlist, node meta, member table, seeds, reconnects;
//	                           its event goroutine reports changes to the Cluster
//	replicator  replicator.go  one link (queue + sender goroutine) per same-zone peer
//	            link.go        and per remote zone; forward never blocks
//	syncer      syncer.go      startup sync, then anti-entropy: one state machine, one goroutine
//	records     records.go     the own infra.discovery record (register, renew loop,
//	                           cancel, authority), dead members' records, admission of
//	                           every copy a peer sends
//	handler     handler.go     the peer endpoints (replicate, snapshot, digest)
//	transport   transport.go   Transport (the peer protocol as a client) and its optional
//	                           capabilities; HTTPTransport (httptransport.go, net/http),
//	                           LegacyTransport (legacytransport.go) and MemNetwork
//	                           (memnet.go) implement it
//
// Start order: membership (gossip binds), remote-zone links, the own record,
// then the syncer and the renew loop. Shutdown: announce the leave, stop the
// loops and joining, cancel the own record (BeginShutdown); close the
// replicator, drain it, stop the senders, leave and stop gossip (Shutdown).
//
// # Membership
//
// Same-zone peers are the live gossip members whose node meta names our
// zone. Meta is one version byte plus compact JSON (HTTP advertise
// address, zone, env, hostname, version, status alive/leaving), checked
// against memberlist's 512-byte limit in New. A graceful Shutdown first
// gossips status "leaving", so survivors tell a leave from a crash: a
// member that disappears without announcing it loses its infra.discovery
// record on every survivor (registry.Evict, no tombstone), and its gossip
// address is retried for a while so a healed partition merges back.
//
// /discovery/nodes lists live same-zone members: UP, or LOST when the member
// announced its leave or this node's replication link to it fails.
// memberlist v0.7.0 does not expose its suspect state (see Cluster.Nodes).
//
// # Replication
//
// The Replicator methods (Register, Renew, Cancel, Set) never block: each
// builds one Op and puts it on the bounded queue of every same-zone peer
// (overflow is dropped and counted) and, for writes allowed across zones
// (spec 7.2), on the queue of one link per remote zone. One sender per
// queue batches up to batch_size ops per POST /discovery/internal/replicate
// and retries with exponential backoff until the peer acknowledges or
// gossip removes it; a batch the peer refuses as a whole (its limits may
// be lower) is halved until it fits. The same op value sits in every
// queue; with a transport that takes encoded bodies (RawReplicator) its
// JSON is encoded once and shared by all senders. The messages and their
// encoders and decoders are package wire's. Per-op answers drive the renew
// handshake of spec 7.3. The node is the authority for its own
// infra.discovery record: a peer's copy or tombstone of it is never
// applied here; the node registers itself again, newer.
//
// Loop freedom is structural: ops sent to same-zone peers are marked
// replication=true and receivers never forward those; ops sent to another
// zone are marked from_zone=true, the receiver forwards them only to its
// own zone (as replication=true), and nothing marked from_zone is ever
// sent to another zone.
//
// # Durability
//
// A client write is acknowledged once the local registry holds it, before
// any peer does (spec 7.2.2: answering after the forwards is Defect D9).
// The forward is queued at once and an idle sender posts it immediately,
// without waiting to fill a batch; over loopback HTTP the window from
// acknowledgement to the peer holding the write is about 0.1 ms
// (BenchmarkReplicationWindow_HTTP), in production about one round trip.
// What happens to a write in that window when its node dies:
//
//   - crash (kill -9, power loss): the write is lost on the cluster. A
//     register or re-register is repaired by the client itself: kratos
//     fails over on the transport error, its next renew (within 30 s) gets
//     -404 from a survivor and it registers again. A lost cancel leaves the
//     instance on the survivors until it is evicted (90-150 s, longer while
//     protected); a lost set must be repeated by whoever sent it.
//   - partition or a peer that is down: the op waits in that peer's
//     bounded queue and is resent with capped backoff until the peer
//     acknowledges it or gossip declares the peer dead; overflow is counted
//     (discovery_replication_ops_dropped_total) and anti-entropy repairs it.
//   - graceful stop: nothing acknowledged is lost. BeginShutdown announces
//     the leave and cancels the node's own record while writes are still
//     forwarded; the caller then closes HTTP (cmd does); Shutdown closes the
//     Replicator under the peer lock and drains every queue until it is
//     empty or its deadline passes. Only ops for a peer that stays
//     unreachable past that deadline are dropped (counted); that peer gets
//     them from the others by anti-entropy.
//
// So: a graceful stop, or a peer failing, loses no acknowledged write that
// another live node received; after a crash of the accepting node,
// registrations come back within one renew interval; a crash inside the
// replication window can lose a cancel or a set.
//
// # Evictions and copies
//
// Evictions are local and leave no tombstone, and nodes scan at different
// times, so startup sync and anti-entropy never import a copy silent for
// longer than the registry's evict_after (Deps.EvictAfter), nor the version
// of a dead member's infra.discovery record this node evicted: otherwise
// nodes would hand a dead instance back and forth.
//
// # Peer protocol (JSON, spec 10.1)
//
//	POST /discovery/internal/replicate
//	  {"from":"node","ops":[
//	    {"op":"register","replication":true,"from_zone":true,"instance":{...14 keys...}},
//	    {"op":"renew","replication":true,"from_zone":true,"key":{"env","appid","zone","hostname"},"dirty_timestamp":N},
//	    {"op":"cancel",...,"key":{...},"dirty_timestamp":<tombstone time>},
//	    {"op":"set",...,"set":{"env","appid","zone","hostnames":[..],"statuses":[..],"metadata":[{..}],"set_timestamp":N}},
//	    {"op":"import","replication":true,"from_zone":true,"instance":{...}}]}
//	  → 200 {"results":[{"code":0,"applied":true},{"code":-404},{"code":-409,"instance":{...}},...]}
//	GET /discovery/internal/snapshot
//	  → 200, header X-Discovery-Ready: true|false,
//	    streamed {"instances":[...],"tombstones":[{"key":{...},"at":N},...]}
//	POST /discovery/internal/digest
//	  {"from":"node","digests":[{"env","appid","digest":N},...]}
//	  → 200 {"apps":[{"env","appid"},...],"state":{"instances":[...],"tombstones":[...]}}
//
// A malformed request is HTTP 400 {"error":"<field>: <reason>"} and changes
// nothing; registry refusals are per-op codes (-400, -404, -409, -500).
//
// # Startup sync and anti-entropy
//
// After the join phase the node streams a snapshot from a same-zone peer
// and merges it (Import, and Cancel at the tombstone time). Ready turns
// true after a sync from a ready peer, or (without init_protect) when there
// is no peer, every peer is starting too, or sync_timeout passed; with
// init_protect only a sync from a ready peer or init_protect_timeout ends
// the phase. Every anti_entropy_interval (±25 % jitter), and when a member
// joins, the node exchanges per-app digests with one peer, merges the
// peer's state of the apps that differ and pushes its own. Rounds start
// once the node is ready (then first with the peers that joined meanwhile),
// and a node still syncing answers digest requests 503: otherwise a joining
// node would receive the whole registry three times, by its sync, by its
// own round and by each peer's round.
//
// # Testing
//
// MemNetwork is an in-memory Transport with partitions, delays, down
// nodes and a per-call hook, usable from any package: give each node
// net.Transport(addr) in Deps and call net.Attach(addr, cluster).
package syncup
