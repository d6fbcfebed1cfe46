package registry

import (
	"errors"
	"fmt"
	"time"
)

// Instance status values (wire values of the discovery protocol).
const (
	StatusUp      uint32 = 1 // ready to receive traffic
	StatusWaiting uint32 = 2 // registered, intentionally not receiving traffic
)

// Instance is one registered endpoint set. Its JSON form is exactly the wire
// form of the discovery protocol (14 keys, spec 3.1).
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

// Key identifies an instance.
func (i *Instance) Key() Key {
	return Key{Env: i.Env, AppID: i.AppID, Zone: i.Zone, Hostname: i.Hostname}
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

// InstanceInfo is the per-appid answer of fetch and poll (spec 3.4).
// Instances maps zone → instances; a zone present in the app but filtered
// empty is an empty (non-nil) slice.
type InstanceInfo struct {
	Instances       map[string][]*Instance `json:"instances"`
	LatestTimestamp int64                  `json:"latest_timestamp"`
}

// SetRequest is an administrative change of status and/or metadata of
// existing instances of one (env, appid, zone) (spec 4.4).
type SetRequest struct {
	Env       string
	AppID     string
	Zone      string
	Hostnames []string
	// Statuses is empty (no status change) or holds one value per hostname.
	Statuses []uint32
	// Metadata is empty (no metadata change) or holds one map per hostname;
	// a nil or empty map replaces the metadata with "no metadata".
	Metadata []map[string]string
	// SetTimestamp stamps every changed instance; 0 means now.
	SetTimestamp int64
}

// Tombstone records a cancel so a late or replayed register/import with an
// older dirty_timestamp cannot resurrect the instance, and so anti-entropy can
// carry cancels across a healed partition. Evictions leave no tombstone: every
// node evicts on its own.
type Tombstone struct {
	Key Key   `json:"key"`
	At  int64 `json:"at"` // cancel time, ns
}

// Snapshot is the full state used for startup sync.
type Snapshot struct {
	Instances  []Instance  `json:"instances"`
	Tombstones []Tombstone `json:"tombstones"`
}

// PollRequest is one long-poll request (poll or polls).
type PollRequest struct {
	Env  string
	Zone string // optional zone filter, "" = all zones
	// AppIDs and Latest are parallel: Latest[i] is the client's
	// latest_timestamp for AppIDs[i] (0 = "I have nothing").
	AppIDs []string
	Latest []int64
}

// PollResult is an answer to a PollRequest.
type PollResult struct {
	// Changed holds the appids that changed, in request order, each with the
	// encoded InstanceInfo JSON (UP instances only, zone filter applied). The
	// bytes are shared between all requests that get the same (app version,
	// zone filter) and MUST NOT be modified.
	Changed []AppPayload
	// Missing holds the requested appids unknown in the env (or lacking the
	// requested zone), in request order.
	Missing []string
}

// AppPayload is one appid's encoded InstanceInfo.
type AppPayload struct {
	AppID string
	JSON  []byte
}

// Stats is a point-in-time view of the registry for metrics and logs.
type Stats struct {
	Instances  map[string]int // by env
	Apps       map[string]int // by env
	Waiters    int            // parked long-poll waiters
	Tombstones int

	// Self-preservation guard.
	Protected        bool
	ExpectedRenews   int64  // expected renews per minute (2 per instance)
	Threshold        int64  // floor(ExpectedRenews * threshold)
	LastMinuteRenews int64  // renews counted in the last closed window
	Evictions        uint64 // total instances evicted since start
}

// Clock is the registry's source of time.
type Clock interface {
	Now() time.Time
}

// invalidError is an ErrInvalid whose text names the offending field first
// ("status: must be 1 or 2, got 3"), so callers can show it as is.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &invalidError{msg: field + ": " + fmt.Sprintf(format, args...)}
}

// requireFields returns an ErrInvalid naming the first empty value of
// name, value pairs.
func requireFields(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return invalid(pairs[i], "must not be empty")
		}
	}
	return nil
}

// Errors returned by the registry. The api package maps them to discovery
// error codes: ErrInvalid → -400, ErrNotFound → -404, ErrConflict → -409.
var (
	// ErrInvalid: the request is malformed (set on unknown instance, bad
	// status, mismatched lists...). Nothing was changed. The error text
	// starts with the name of the offending field.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: the instance or app does not exist, or (replicated renew)
	// the receiver's copy is older than the sender's, so the sender should
	// send its full register.
	ErrNotFound = errors.New("not found")
	// ErrConflict: (replicated renew) the sender's copy is older; the
	// returned Instance is the receiver's newer copy for the sender to adopt.
	ErrConflict = errors.New("conflict")
)
