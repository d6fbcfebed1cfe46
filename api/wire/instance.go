package wire

import (
	"net"
	"net/url"
)

// InfraAppID is the appid under which every node registers itself; clients
// learn the node list by watching it (spec 7.5, 7.6).
const InfraAppID = "infra.discovery"

// Instance status values (spec 1).
const (
	StatusUp      uint32 = 1 // ready to receive traffic
	StatusWaiting uint32 = 2 // registered, intentionally not receiving traffic
)

// Node status values of /discovery/nodes (spec 4.10).
const (
	NodeUp   = 0
	NodeLost = 1
)

// Instance is one registered endpoint set of an appid in its wire form:
// exactly the 14 keys of spec 3.1, in the original's order. Timestamps are
// int64 nanoseconds since the Unix epoch.
type Instance struct {
	Region   string `json:"region"`
	Zone     string `json:"zone"`
	Env      string `json:"env"`
	AppID    string `json:"appid"`
	Hostname string `json:"hostname"`
	// Addrs are URLs scheme://host:port, e.g. grpc://10.0.0.5:9000; order
	// is kept.
	Addrs   []string `json:"addrs"`
	Version string   `json:"version"`
	// Metadata is free-form; well-known keys: weight (decimal, default 10),
	// color, cluster.
	Metadata        map[string]string `json:"metadata"`
	Status          uint32            `json:"status"`
	RegTimestamp    int64             `json:"reg_timestamp"`
	UpTimestamp     int64             `json:"up_timestamp"`
	RenewTimestamp  int64             `json:"renew_timestamp"`
	DirtyTimestamp  int64             `json:"dirty_timestamp"`
	LatestTimestamp int64             `json:"latest_timestamp"`
}

// Key identifies an instance.
func (in *Instance) Key() Key {
	return Key{Env: in.Env, AppID: in.AppID, Zone: in.Zone, Hostname: in.Hostname}
}

// Clone returns a deep copy: the copy shares no slice or map with in.
func (in *Instance) Clone() Instance {
	out := *in
	if in.Addrs != nil {
		out.Addrs = append(make([]string, 0, len(in.Addrs)), in.Addrs...)
	}
	if in.Metadata != nil {
		out.Metadata = make(map[string]string, len(in.Metadata))
		for k, v := range in.Metadata {
			out.Metadata[k] = v
		}
	}
	return out
}

// HostPorts returns the host:port part of every addr whose scheme is scheme
// ("grpc", "http"), in registration order. Addrs that are not
// scheme://host:port URLs are skipped.
func (in *Instance) HostPorts(scheme string) []string {
	var out []string
	for _, a := range in.Addrs {
		u, err := url.Parse(a)
		if err != nil || u.Scheme != scheme || u.Host == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			continue
		}
		out = append(out, u.Host)
	}
	return out
}

// Key is the identity of an instance: (env, appid, zone, hostname).
type Key struct {
	Env      string `json:"env"`
	AppID    string `json:"appid"`
	Zone     string `json:"zone"`
	Hostname string `json:"hostname"`
}

// AppKey identifies an app: (env, appid).
type AppKey struct {
	Env   string `json:"env"`
	AppID string `json:"appid"`
}

// InstanceInfo is the per-appid answer of fetch, fetchs, poll and polls
// (spec 3.4): zone → instances, and the app's latest_timestamp. A zone the
// app has but a status filter left empty is an empty array, never null.
type InstanceInfo struct {
	Instances       map[string][]*Instance `json:"instances"`
	LatestTimestamp int64                  `json:"latest_timestamp"`
}

// Node is one entry of /discovery/nodes (spec 4.10).
type Node struct {
	// Addr is the node's advertised HTTP host:port, no scheme.
	Addr   string `json:"addr"`
	Status int    `json:"status"` // NodeUp or NodeLost
	Zone   string `json:"zone"`
}

// Tombstone records a cancel, so that a late or replayed register with an
// older dirty_timestamp cannot bring the instance back, and so that
// anti-entropy can carry cancels across a healed partition.
type Tombstone struct {
	Key Key   `json:"key"`
	At  int64 `json:"at"` // cancel time, ns
}

// Snapshot is a node's state, or a part of it (digest answers): instances
// with every timestamp, and tombstones.
type Snapshot struct {
	Instances  []Instance  `json:"instances"`
	Tombstones []Tombstone `json:"tombstones"`
}
