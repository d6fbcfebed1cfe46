// Package syncup is the cluster layer of a discovery node: gossip
// membership (hashicorp/memberlist), replication of client writes to the
// other nodes, startup sync, anti-entropy and the node's own
// infra.discovery record (spec section 7).
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
// # Replication
//
// The Replicator methods (Register, Renew, Cancel, Set) never block: each
// builds one Op and puts it on the bounded queue of every same-zone peer
// (overflow is dropped and counted) and, for writes allowed across zones
// (spec 7.2), on the queue of one link per remote zone. One sender per
// queue batches up to batch_size ops per POST /discovery/internal/replicate
// and retries with exponential backoff until the peer acknowledges or
// gossip removes it. Per-op answers drive the renew handshake of spec 7.3.
//
// Loop freedom is structural: ops sent to same-zone peers are marked
// replication=true and receivers never forward those; ops sent to another
// zone are marked from_zone=true, the receiver forwards them only to its
// own zone (as replication=true), and nothing marked from_zone is ever
// sent to another zone.
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
// peer's state of the apps that differ and pushes its own.
//
// # Testing
//
// MemNetwork is an in-memory Transport with partitions, delays, down
// nodes and a per-call hook, usable from any package: give each node
// net.Transport(addr) in Deps and call net.Attach(addr, cluster).
package syncup
