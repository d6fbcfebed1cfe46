package wire

// The admin API (GET /discovery/admin/..., discovery envelope; the admin
// token when one is configured): what the web page (/ui/) and
// `discovery ctl` show. Times are Unix nanoseconds, durations seconds.

// Admin API paths.
const (
	PathAdminStatus  = "/discovery/admin/status"
	PathAdminApps    = "/discovery/admin/apps"
	PathAdminApp     = "/discovery/admin/app"
	PathAdminChanges = "/discovery/admin/changes"
)

// AdminStatus is the overview of one node.
type AdminStatus struct {
	Node        NodeStatus        `json:"node"`
	Members     []MemberStatus    `json:"members"`
	Registry    RegistryStatus    `json:"registry"`
	Polls       PollStatus        `json:"polls"`
	Replication []PeerStatus      `json:"replication"`
	AntiEntropy AntiEntropyStatus `json:"anti_entropy"`
	Legacy      []LegacyStatus    `json:"legacy"`
	Connections ConnStatus        `json:"connections"`
}

// NodeStatus is the answering node itself.
type NodeStatus struct {
	Name          string  `json:"name"` // gossip name
	Hostname      string  `json:"hostname"`
	Env           string  `json:"env"`
	Zone          string  `json:"zone"`
	Region        string  `json:"region"`
	Version       string  `json:"version"`
	Addr          string  `json:"addr"`            // advertised HTTP host:port
	HTTPS         string  `json:"https,omitempty"` // advertised HTTPS host:port
	Started       int64   `json:"started"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Ready         bool    `json:"ready"`
}

// MemberStatus is one same-zone node as gossip lists it.
type MemberStatus struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	Zone  string `json:"zone"`
	State string `json:"state"` // up, lost (our link to it fails), leaving
	Self  bool   `json:"self,omitempty"`
}

// RegistryStatus is the registry's state and its self-preservation guard.
type RegistryStatus struct {
	Instances        map[string]int    `json:"instances"` // by env
	Apps             map[string]int    `json:"apps"`      // by env
	Protected        bool              `json:"protected"`
	ExpectedRenews   int64             `json:"expected_renews_per_minute"`
	RenewThreshold   int64             `json:"renew_threshold_per_minute"`
	RenewsLastMinute int64             `json:"renews_last_minute"`
	Evictions        uint64            `json:"evictions"`
	Tombstones       int               `json:"tombstones"`
	Full             map[string]uint64 `json:"full_refusals"` // by cap: max_instances, max_apps, max_envs
}

// PollStatus counts parked long-polls.
type PollStatus struct {
	Parked int64 `json:"parked"`
	Max    int   `json:"max"`
}

// PeerStatus is one replication link.
type PeerStatus struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// Kind: peer (same zone), zone (a remote zone), legacy, legacy-zone.
	Kind    string  `json:"kind"`
	Queue   int64   `json:"queue"` // ops queued and not acknowledged
	Failing bool    `json:"failing"`
	Acked   uint64  `json:"acked"`
	Failed  uint64  `json:"failed"`
	LagMs   float64 `json:"last_lag_ms"` // of the last acknowledged batch
}

// AntiEntropyStatus counts anti-entropy rounds and repairs.
type AntiEntropyStatus struct {
	Repairs      uint64 `json:"repairs"`
	RoundsOK     uint64 `json:"rounds_ok"`
	RoundsFailed uint64 `json:"rounds_failed"`
}

// LegacyStatus is what a node knows of one legacy (bilibili/discovery)
// node of a migration.
type LegacyStatus struct {
	Addr      string `json:"addr"`
	Zone      string `json:"zone,omitempty"` // empty: the node's own zone
	Up        bool   `json:"up"`
	LastPull  int64  `json:"last_pull"` // 0: never
	LastError string `json:"last_error,omitempty"`
	Forwarded uint64 `json:"ops_forwarded"`
	Failed    uint64 `json:"ops_failed"`
	Received  uint64 `json:"ops_received"`
	Repaired  uint64 `json:"items_repaired"`
}

// ConnStatus counts HTTP connections against their caps.
type ConnStatus struct {
	Open     int `json:"open"`
	Max      int `json:"max"`
	MaxPerIP int `json:"max_per_ip"`
}

// ClusterStatus is the cluster layer's part of AdminStatus.
type ClusterStatus struct {
	Name        string
	Members     []MemberStatus
	Replication []PeerStatus
	AntiEntropy AntiEntropyStatus
	Legacy      []LegacyStatus
}

// AppsPage is one page of the apps list.
type AppsPage struct {
	Total  int          `json:"total"`
	Offset int          `json:"offset"`
	Apps   []AppSummary `json:"apps"`
}

// AppSummary counts one app's instances.
type AppSummary struct {
	Env             string                `json:"env"`
	AppID           string                `json:"appid"`
	Instances       int                   `json:"instances"`
	Up              int                   `json:"up"`
	Waiting         int                   `json:"waiting"`
	Stale           int                   `json:"stale"`
	Zones           map[string]ZoneCounts `json:"zones"`
	LatestTimestamp int64                 `json:"latest_timestamp"`
}

// ZoneCounts counts one app's instances in one zone.
type ZoneCounts struct {
	Up      int `json:"up"`
	Waiting int `json:"waiting"`
	Stale   int `json:"stale"` // last renew older than the stale bound
}

// AppDetail is one app with every instance.
type AppDetail struct {
	Env             string           `json:"env"`
	AppID           string           `json:"appid"`
	LatestTimestamp int64            `json:"latest_timestamp"`
	StaleAfter      float64          `json:"stale_after_seconds"`
	Nodes           []string         `json:"nodes"` // the nodes asked which copies they hold
	Instances       []InstanceDetail `json:"instances"`
}

// InstanceDetail is one instance with the age of its last renew and the
// nodes that hold the same version of it.
type InstanceDetail struct {
	Instance
	RenewAgeSeconds float64  `json:"renew_age_seconds"`
	Stale           bool     `json:"stale"`
	HeldBy          []string `json:"held_by"`
}

// Changes is the answer of PathAdminChanges: the registry's change count.
type Changes struct {
	Version uint64 `json:"version"`
}
