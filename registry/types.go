package registry

import (
	"errors"
	"fmt"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// Instance status values (wire values of the discovery protocol).
const (
	StatusUp      = wire.StatusUp      // ready to receive traffic
	StatusWaiting = wire.StatusWaiting // registered, intentionally not receiving traffic
)

// The registry stores and returns the wire types (package wire is their
// one definition): an Instance is exactly the 14-key instance of spec 3.1.
type (
	Instance     = wire.Instance
	Key          = wire.Key
	AppKey       = wire.AppKey
	InstanceInfo = wire.InstanceInfo
	// Tombstone records a cancel so a late or replayed register/import with
	// an older dirty_timestamp cannot resurrect the instance, and so
	// anti-entropy can carry cancels across a healed partition. Evictions
	// leave no tombstone: every node evicts on its own.
	Tombstone = wire.Tombstone
	// Snapshot is the full state used for startup sync, or the state of
	// some apps (AppState).
	Snapshot = wire.Snapshot
)

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

	// Full counts the writes refused by the caps, since start.
	Full struct{ Instances, Apps, Envs uint64 }
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
	// ErrFull: a new instance, app or env would exceed max_instances,
	// max_apps or max_envs. Nothing was changed.
	ErrFull = errors.New("registry full")
)
