package client

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"sort"
)

// Instance status values (wire values).
const (
	StatusUp      uint32 = 1 // receives traffic
	StatusWaiting uint32 = 2 // registered, intentionally not receiving traffic
)

// InfraAppID is the appid every discovery node registers itself under; the
// client watches it to learn the node list.
const InfraAppID = "infra.discovery"

// Instance is one registered endpoint set of an appid, in its wire form.
//
// For Register only AppID and Addrs are required; Region, Zone, Env and
// Hostname default to the client's Config, Status 0 means StatusUp. The
// timestamps are set by the server and ignored by Register.
type Instance struct {
	Region   string `json:"region"`
	Zone     string `json:"zone"`
	Env      string `json:"env"`
	AppID    string `json:"appid"`
	Hostname string `json:"hostname"`
	// Addrs are URLs scheme://host:port, e.g. grpc://10.0.0.5:9000.
	Addrs   []string `json:"addrs"`
	Version string   `json:"version"`
	// Metadata is free-form; well-known keys: weight (decimal, default 10),
	// color, cluster.
	Metadata map[string]string `json:"metadata"`
	Status   uint32            `json:"status"`

	RegTimestamp    int64 `json:"reg_timestamp"`
	UpTimestamp     int64 `json:"up_timestamp"`
	RenewTimestamp  int64 `json:"renew_timestamp"`
	DirtyTimestamp  int64 `json:"dirty_timestamp"`
	LatestTimestamp int64 `json:"latest_timestamp"`
}

// HostPorts returns the host:port part of every addr whose scheme is scheme
// ("grpc", "http"), in registration order. Unparsable addrs are skipped.
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

func (in *Instance) clone() Instance {
	out := *in
	out.Addrs = slices.Clone(in.Addrs)
	out.Metadata = maps.Clone(in.Metadata)
	return out
}

// sameContent compares what a consumer acts on, ignoring timestamps: they
// differ between nodes for the same registration (reg/renew are per node).
func (in *Instance) sameContent(o *Instance) bool {
	return in.Region == o.Region && in.Zone == o.Zone && in.Env == o.Env && in.AppID == o.AppID &&
		in.Hostname == o.Hostname && in.Version == o.Version && in.Status == o.Status &&
		slices.Equal(in.Addrs, o.Addrs) && maps.Equal(in.Metadata, o.Metadata)
}

// Instances is the instance set of one appid as a node answered it: UP
// instances only for Watch and Fetch, grouped by zone. Zones never holds an
// empty slice. Values handed to callers are copies they may keep and modify.
type Instances struct {
	AppID string
	// Zones maps zone → instances, in the order the node sent them.
	Zones map[string][]Instance
	// LatestTimestamp is the app's change counter on the node that answered;
	// it is only comparable between answers of the same node.
	LatestTimestamp int64
}

// All returns every instance, zones in sorted order.
func (s *Instances) All() []Instance {
	zones := slices.Sorted(maps.Keys(s.Zones))
	var out []Instance
	for _, z := range zones {
		out = append(out, s.Zones[z]...)
	}
	return out
}

// Len is the number of instances in all zones.
func (s *Instances) Len() int {
	n := 0
	for _, l := range s.Zones {
		n += len(l)
	}
	return n
}

func (s *Instances) clone() *Instances {
	out := &Instances{AppID: s.AppID, LatestTimestamp: s.LatestTimestamp, Zones: make(map[string][]Instance, len(s.Zones))}
	for z, l := range s.Zones {
		cl := make([]Instance, len(l))
		for i := range l {
			cl[i] = l[i].clone()
		}
		out.Zones[z] = cl
	}
	return out
}

// sameContent compares two sets as unordered collections of instances keyed
// by (zone, hostname), ignoring timestamps.
func (s *Instances) sameContent(o *Instances) bool {
	if s.Len() != o.Len() || len(s.Zones) != len(o.Zones) {
		return false
	}
	for z, l := range s.Zones {
		ol, ok := o.Zones[z]
		if !ok || len(ol) != len(l) {
			return false
		}
		byHost := make(map[string]*Instance, len(ol))
		for i := range ol {
			byHost[ol[i].Hostname] = &ol[i]
		}
		for i := range l {
			oi, ok := byHost[l[i].Hostname]
			if !ok || !l[i].sameContent(oi) {
				return false
			}
		}
	}
	return true
}

// envelope is every protocol answer. Code is a pointer so that a body
// without "code" is rejected instead of read as success.
type envelope struct {
	Code    *int            `json:"code"`
	Message json.RawMessage `json:"message"`
	Data    json.RawMessage `json:"data"`
	Error   json.RawMessage `json:"error"`
}

func (e *envelope) message() string {
	var s string
	if json.Unmarshal(e.Message, &s) == nil {
		return s
	}
	return string(e.Message)
}

func (e *envelope) hasData() bool {
	return len(e.Data) > 0 && string(e.Data) != "null"
}

// wireInfo is the per-appid InstanceInfo (spec 3.4). Pointers let decoding
// tell null from absent and missing from zero.
type wireInfo struct {
	Instances       map[string][]*Instance `json:"instances"`
	LatestTimestamp *int64                 `json:"latest_timestamp"`
}

// decodeInfo validates one InstanceInfo: an object with a positive
// latest_timestamp, instances an object of arrays of non-null instances.
// Empty zones are dropped (a consumer cannot use them).
func decodeInfo(appid string, raw json.RawMessage) (*Instances, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("%w: %s: null instance info", ErrBadResponse, appid)
	}
	var w wireInfo
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadResponse, appid, err)
	}
	if w.LatestTimestamp == nil || *w.LatestTimestamp <= 0 {
		return nil, fmt.Errorf("%w: %s: latest_timestamp missing or not positive", ErrBadResponse, appid)
	}
	out := &Instances{AppID: appid, LatestTimestamp: *w.LatestTimestamp, Zones: make(map[string][]Instance, len(w.Instances))}
	for z, l := range w.Instances {
		if len(l) == 0 {
			continue
		}
		cl := make([]Instance, 0, len(l))
		for i, in := range l {
			if in == nil {
				return nil, fmt.Errorf("%w: %s: instances[%q][%d] is null", ErrBadResponse, appid, z, i)
			}
			cl = append(cl, *in)
		}
		out.Zones[z] = cl
	}
	return out, nil
}

// pollAnswer is a decoded successful polls answer.
type pollAnswer struct {
	changed map[string]*Instances
	missing []string
}

// decodePolls validates the data and error parts of a code-0 polls answer.
// Appids the client did not ask for are ignored (a correct server never sends
// them, spec 5.4.1).
func decodePolls(env *envelope, asked map[string]bool) (*pollAnswer, error) {
	ans := &pollAnswer{changed: map[string]*Instances{}}
	if env.hasData() {
		var data map[string]json.RawMessage
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return nil, fmt.Errorf("%w: polls data: %v", ErrBadResponse, err)
		}
		keys := slices.Sorted(maps.Keys(data))
		for _, appid := range keys {
			if !asked[appid] {
				continue
			}
			info, err := decodeInfo(appid, data[appid])
			if err != nil {
				return nil, err
			}
			ans.changed[appid] = info
		}
	}
	// "error" is informational (kratos ignores it); a malformed one is
	// ignored rather than failing an otherwise good answer.
	if len(env.Error) > 0 {
		var e map[string][]string
		if json.Unmarshal(env.Error, &e) == nil {
			for _, appid := range e["-404"] {
				if asked[appid] {
					ans.missing = append(ans.missing, appid)
				}
			}
			sort.Strings(ans.missing)
		}
	}
	return ans, nil
}
