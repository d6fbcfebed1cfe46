package client

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/discovery-go/discovery/api/wire"
)

// Instance status values (wire values).
const (
	StatusUp      = wire.StatusUp      // receives traffic
	StatusWaiting = wire.StatusWaiting // registered, intentionally not receiving traffic
)

// InfraAppID is the appid every discovery node registers itself under; the
// client watches it to learn the node list.
const InfraAppID = wire.InfraAppID

// Instance is one registered endpoint set of an appid, in its wire form
// (the wire package's one definition; HostPorts extracts host:port by
// scheme).
//
// For Register only AppID and Addrs are required; Region, Zone, Env and
// Hostname default to the client's Config, Status 0 means StatusUp. The
// timestamps are set by the server and ignored by Register.
type Instance = wire.Instance

// sameContent compares what a consumer acts on, ignoring timestamps: they
// differ between nodes for the same registration (reg/renew are per node).
func sameContent(in, o *Instance) bool {
	return in.Region == o.Region && in.Zone == o.Zone && in.Env == o.Env && in.AppID == o.AppID &&
		in.Hostname == o.Hostname && in.Version == o.Version && in.Status == o.Status &&
		equalStrings(in.Addrs, o.Addrs) && equalMaps(in.Metadata, o.Metadata)
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
	zones := sortedKeys(s.Zones)
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
			cl[i] = l[i].Clone()
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
			if !ok || !sameContent(&l[i], oi) {
				return false
			}
		}
	}
	return true
}

// envelope is every protocol answer (wire.DecodeEnvelope: an answer
// without "code" is rejected instead of read as success).
type envelope = wire.Envelope

// decodeInfo validates one InstanceInfo: an object with a positive
// latest_timestamp, instances an object of arrays of non-null instances.
// Empty zones are dropped (a consumer cannot use them).
func decodeInfo(appid string, raw json.RawMessage) (*Instances, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("%w: %s: null instance info", ErrBadResponse, appid)
	}
	var w wire.InstanceInfo
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadResponse, appid, err)
	}
	if w.LatestTimestamp <= 0 { // missing or 0: kratos treats it as an error too (spec 5.5)
		return nil, fmt.Errorf("%w: %s: latest_timestamp missing or not positive", ErrBadResponse, appid)
	}
	out := &Instances{AppID: appid, LatestTimestamp: w.LatestTimestamp, Zones: make(map[string][]Instance, len(w.Instances))}
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
	if env.HasData() {
		var data map[string]json.RawMessage
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return nil, fmt.Errorf("%w: polls data: %w", ErrBadResponse, err)
		}
		keys := sortedKeys(data)
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

// sortedKeys returns m's keys in order (iteration-free of newer Go APIs:
// the SDK builds with Go 1.22).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
