package legacy

import (
	"maps"
	"slices"
)

// AppIDDiscovery is the appid every node registers itself under.
const AppIDDiscovery = "infra.discovery"

// Instance statuses; fetch-style status parameters are bit masks over them.
const (
	StatusUP      = uint32(1)
	StatusWaiting = uint32(2)
)

// Instance is one registered instance, with the original's JSON keys in its
// order.
type Instance struct {
	Region          string            `json:"region"`
	Zone            string            `json:"zone"`
	Env             string            `json:"env"`
	AppID           string            `json:"appid"`
	Hostname        string            `json:"hostname"`
	Addrs           []string          `json:"addrs"`
	Version         string            `json:"version"`
	Metadata        map[string]string `json:"metadata"`
	Status          uint32            `json:"status"`
	RegTimestamp    int64             `json:"reg_timestamp"`
	UpTimestamp     int64             `json:"up_timestamp"`
	RenewTimestamp  int64             `json:"renew_timestamp"`
	DirtyTimestamp  int64             `json:"dirty_timestamp"`
	LatestTimestamp int64             `json:"latest_timestamp"`
}

// InstanceInfo is the per-appid answer of fetch, fetchs, poll and polls. The
// original's scheduler key is never emitted (no strategy is ever configured).
type InstanceInfo struct {
	Instances       map[string][]*Instance `json:"instances"`
	LatestTimestamp int64                  `json:"latest_timestamp"`
}

// NodeInfo is one entry of /discovery/nodes.
type NodeInfo struct {
	Addr   string `json:"addr"`
	Status int    `json:"status"`
	Zone   string `json:"zone"`
}

// readCopy is the copy used by fetch, fetchs, poll and polls: the original
// deep-copies into fresh containers there, so metadata is {} (never null) and
// addrs [] (never null).
func (i *Instance) readCopy() *Instance {
	c := *i
	c.Addrs = make([]string, len(i.Addrs))
	copy(c.Addrs, i.Addrs)
	c.Metadata = make(map[string]string, len(i.Metadata))
	maps.Copy(c.Metadata, i.Metadata)
	return &c
}

// plainCopy keeps nil metadata nil: fetch/all and renew data show null for an
// instance that never had metadata. The containers are still copied because
// set mutates the stored map in place.
func (i *Instance) plainCopy() *Instance {
	c := *i
	c.Addrs = slices.Clone(i.Addrs)
	c.Metadata = maps.Clone(i.Metadata)
	return &c
}
