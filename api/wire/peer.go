package wire

import (
	"errors"
	"fmt"
)

// Peer protocol between nodes of this server (spec 10.1). JSON bodies over
// HTTP:
//
//	POST PathReplicate  ReplicateRequest  → 200 ReplicateResponse
//	GET  PathSnapshot                     → 200 snapshot stream (EncodeSnapshot), ReadyHeader
//	POST PathDigest     DigestRequest     → 200 DigestResponse
//
// A malformed request is answered HTTP 400 {"error":"<field>: <reason>"}
// and changes nothing; refusals of single ops are per-op codes.
const (
	PathReplicate = "/discovery/internal/replicate"
	PathSnapshot  = "/discovery/internal/snapshot"
	PathDigest    = "/discovery/internal/digest"

	// ReadyHeader on a snapshot answer tells whether the serving node had
	// finished its own startup sync ("true"/"false").
	ReadyHeader = "X-Discovery-Ready"
)

// OpKind names a replicated operation.
type OpKind string

// Operation kinds of the replicate endpoint.
const (
	OpRegister OpKind = "register" // Instance; dirty_timestamp inside it
	OpRenew    OpKind = "renew"    // Key + DirtyTimestamp (sender's copy)
	OpCancel   OpKind = "cancel"   // Key + DirtyTimestamp (tombstone time)
	OpSet      OpKind = "set"      // Set (set_timestamp inside it)
	OpImport   OpKind = "import"   // Instance with all timestamps (anti-entropy push)
)

// Op is one replicated write. Replication true: the receiver applies it and
// never forwards it (same-zone copy). Replication false with FromZone true:
// an "original" write from another zone; the receiver applies it and
// forwards it only inside its own zone (spec 7.2).
type Op struct {
	Kind        OpKind `json:"op"`
	Replication bool   `json:"replication"`
	FromZone    bool   `json:"from_zone"`
	// Instance: register and import.
	Instance *Instance `json:"instance,omitempty"`
	// Key: renew and cancel.
	Key *Key `json:"key,omitempty"`
	// DirtyTimestamp: renew (sender's dirty_timestamp), cancel (tombstone
	// time, ns).
	DirtyTimestamp int64 `json:"dirty_timestamp,omitempty"`
	// Set: set.
	Set *SetOp `json:"set,omitempty"`
	// Owner: register; the client address the write came from, for the
	// key-ownership policy (empty: unknown, the receiver keeps its own).
	Owner string `json:"owner,omitempty"`
}

// SetOp is a replicated set (spec 4.4): status and/or metadata of existing
// instances of one (env, appid, zone), stamped with SetTimestamp on every
// node.
type SetOp struct {
	Env          string              `json:"env"`
	AppID        string              `json:"appid"`
	Zone         string              `json:"zone"`
	Hostnames    []string            `json:"hostnames"`
	Statuses     []uint32            `json:"statuses,omitempty"`
	Metadata     []map[string]string `json:"metadata,omitempty"`
	SetTimestamp int64               `json:"set_timestamp"`
}

// OpResult is the outcome of one op. Code is a discovery code: 0, -400,
// -404 (renew: the receiver lacks the sender's version; send a register),
// -409 (renew: the receiver's copy is newer; Instance holds it), -500.
type OpResult struct {
	Code int `json:"code"`
	// Message explains a non-zero code.
	Message string `json:"message,omitempty"`
	// Applied: the op changed the receiver's state (register, import,
	// cancel); anti-entropy counts repairs with it.
	Applied bool `json:"applied,omitempty"`
	// Instance: the receiver's newer copy on CodeConflict.
	Instance *Instance `json:"instance,omitempty"`
}

// ReplicateRequest is the body of POST PathReplicate.
type ReplicateRequest struct {
	// From is the sender's node name (logs only; authentication is the
	// transport's).
	From string `json:"from,omitempty"`
	Ops  []Op   `json:"ops"`
}

// ReplicateResponse answers a ReplicateRequest: Results[i] belongs to Ops[i].
type ReplicateResponse struct {
	Results []OpResult `json:"results"`
}

// SnapshotItem is one element of a snapshot stream: exactly one field set.
type SnapshotItem struct {
	Instance  *Instance
	Tombstone *Tombstone
}

// AppDigest is one app's version hash.
type AppDigest struct {
	Env    string `json:"env"`
	AppID  string `json:"appid"`
	Digest uint64 `json:"digest"`
}

// DigestRequest is the body of POST PathDigest.
type DigestRequest struct {
	From    string      `json:"from,omitempty"`
	Digests []AppDigest `json:"digests"`
}

// DigestResponse lists the apps whose digest differs between the two nodes
// (either side may lack the app) and the answering node's state of them.
type DigestResponse struct {
	Apps  []AppKey `json:"apps"`
	State Snapshot `json:"state"`
}

// Validate checks a batch's structure: at most maxOps ops, each of a known
// kind with the fields its kind needs. Errors name the field
// ("ops[3].key.zone: required"). Values (status, limits, timestamps) are
// the registry's to judge.
func (r *ReplicateRequest) Validate(maxOps int) error {
	if len(r.Ops) == 0 {
		return errors.New("ops: must not be empty")
	}
	if len(r.Ops) > maxOps {
		return fmt.Errorf("ops: at most %d per request, got %d", maxOps, len(r.Ops))
	}
	for i := range r.Ops {
		if err := r.Ops[i].Validate(); err != nil {
			return fmt.Errorf("ops[%d].%w", i, err)
		}
	}
	return nil
}

// Validate checks one op's structure.
func (o *Op) Validate() error {
	if !o.Replication && !o.FromZone {
		// Only clients send "original, not from a zone" writes, and they use
		// the public endpoints; a peer always sets one of the two flags.
		return errors.New("replication: replication or from_zone must be true")
	}
	switch o.Kind {
	case OpRegister, OpImport:
		if o.Instance == nil {
			return errors.New("instance: required")
		}
		if err := o.Instance.Key().Validate(); err != nil {
			return fmt.Errorf("instance.%w", err)
		}
		if o.Instance.DirtyTimestamp <= 0 {
			return errors.New("instance.dirty_timestamp: must be > 0")
		}
		if len(o.Instance.Addrs) == 0 {
			return errors.New("instance.addrs: must not be empty")
		}
	case OpRenew, OpCancel:
		if o.Key == nil {
			return errors.New("key: required")
		}
		if err := o.Key.Validate(); err != nil {
			return fmt.Errorf("key.%w", err)
		}
		if o.DirtyTimestamp <= 0 {
			return errors.New("dirty_timestamp: must be > 0")
		}
	case OpSet:
		if o.Set == nil {
			return errors.New("set: required")
		}
		switch {
		case o.Set.Env == "":
			return errors.New("set.env: required")
		case o.Set.AppID == "":
			return errors.New("set.appid: required")
		case o.Set.Zone == "":
			return errors.New("set.zone: required")
		case len(o.Set.Hostnames) == 0:
			return errors.New("set.hostnames: must not be empty")
		case o.Set.SetTimestamp <= 0:
			return errors.New("set.set_timestamp: must be > 0")
		}
	default:
		return fmt.Errorf("op: unknown kind %q", o.Kind)
	}
	return nil
}

// Validate reports the first empty field of k by its name.
func (k Key) Validate() error {
	switch {
	case k.Env == "":
		return errors.New("env: required")
	case k.AppID == "":
		return errors.New("appid: required")
	case k.Zone == "":
		return errors.New("zone: required")
	case k.Hostname == "":
		return errors.New("hostname: required")
	}
	return nil
}
