package syncup

import (
	"context"
	"errors"
	"fmt"

	"github.com/discovery-go/discovery/registry"
)

// Transport reaches the peer protocol of another node (spec 10.1). addr is
// the peer's advertised HTTP host:port. Implementations must be safe for
// concurrent use; every call is bounded by ctx.
//
// Two implementations ship: HTTPTransport (JSON over HTTP, production) and
// MemNetwork.Transport (in memory, with fault injection, for tests).
type Transport interface {
	// Replicate delivers a batch of ops; the answer holds one result per op,
	// in order. An error means the batch as a whole failed (network, peer
	// down, refused); it is *PermanentError when resending cannot help.
	Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error)
	// Snapshot streams the peer's full state into sink, item by item, and
	// reports whether the peer itself was ready (synced) when it answered.
	Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (peerReady bool, err error)
	// Digest sends our per-app digests; the peer answers with the apps whose
	// versions differ and its own state of those apps.
	Digest(ctx context.Context, addr string, req *DigestRequest) (*DigestResponse, error)
}

// PermanentError marks a failure that resending the same request cannot
// fix (the peer rejected the payload).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

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
// forwards it only inside its own zone (spec 7.2). Ops are shared between
// peer queues and must not be modified once built.
type Op struct {
	Kind        OpKind `json:"op"`
	Replication bool   `json:"replication"`
	FromZone    bool   `json:"from_zone"`
	// Instance: register and import.
	Instance *registry.Instance `json:"instance,omitempty"`
	// Key: renew and cancel.
	Key *registry.Key `json:"key,omitempty"`
	// DirtyTimestamp: renew (sender's dirty_timestamp), cancel (tombstone
	// time, ns).
	DirtyTimestamp int64 `json:"dirty_timestamp,omitempty"`
	// Set: set.
	Set *SetOp `json:"set,omitempty"`
}

// SetOp is the wire form of registry.SetRequest.
type SetOp struct {
	Env          string              `json:"env"`
	AppID        string              `json:"appid"`
	Zone         string              `json:"zone"`
	Hostnames    []string            `json:"hostnames"`
	Statuses     []uint32            `json:"statuses,omitempty"`
	Metadata     []map[string]string `json:"metadata,omitempty"`
	SetTimestamp int64               `json:"set_timestamp"`
}

func setOpFrom(r registry.SetRequest) *SetOp {
	return &SetOp{
		Env: r.Env, AppID: r.AppID, Zone: r.Zone,
		Hostnames:    append([]string(nil), r.Hostnames...),
		Statuses:     append([]uint32(nil), r.Statuses...),
		Metadata:     cloneMetaList(r.Metadata),
		SetTimestamp: r.SetTimestamp,
	}
}

func (s *SetOp) request() registry.SetRequest {
	return registry.SetRequest{
		Env: s.Env, AppID: s.AppID, Zone: s.Zone,
		Hostnames: s.Hostnames, Statuses: s.Statuses, Metadata: s.Metadata,
		SetTimestamp: s.SetTimestamp,
	}
}

// Result codes of one op (the discovery codes of spec 2.5 / 7.3).
const (
	CodeOK         = 0
	CodeInvalid    = -400
	CodeNotFound   = -404 // renew: receiver has no copy or an older one; send a register
	CodeConflict   = -409 // renew: receiver's copy is newer; Instance holds it
	CodeServerFail = -500
)

// OpResult is the outcome of one op.
type OpResult struct {
	Code int `json:"code"`
	// Message explains a non-zero code.
	Message string `json:"message,omitempty"`
	// Applied: the op changed the receiver's state (register, import,
	// cancel); anti-entropy counts repairs with it.
	Applied bool `json:"applied,omitempty"`
	// Instance: the receiver's newer copy on CodeConflict.
	Instance *registry.Instance `json:"instance,omitempty"`
}

// ReplicateRequest is the body of POST /discovery/internal/replicate.
// Transports must not keep it (or its Ops) after Replicate returns: the
// sender reuses them.
type ReplicateRequest struct {
	// From is the sender's node name (logs only).
	From string `json:"from,omitempty"`
	Ops  []Op   `json:"ops"`

	// wire, when set, is this request's JSON, built by the sender from
	// per-op encodings shared between peers (HTTPTransport sends it as is).
	wire []byte
}

// ReplicateResponse answers a ReplicateRequest: Results[i] belongs to Ops[i].
type ReplicateResponse struct {
	Results []OpResult `json:"results"`
}

// SnapshotItem is one element of a snapshot stream: exactly one field set.
type SnapshotItem struct {
	Instance  *registry.Instance
	Tombstone *registry.Tombstone
}

// AppDigest is one app's version hash (registry.AppDigests).
type AppDigest struct {
	Env    string `json:"env"`
	AppID  string `json:"appid"`
	Digest uint64 `json:"digest"`
}

// DigestRequest is the body of POST /discovery/internal/digest.
type DigestRequest struct {
	From    string      `json:"from,omitempty"`
	Digests []AppDigest `json:"digests"`
}

// DigestResponse lists the apps whose digest differs between the two nodes
// (either side may lack the app) and the answering node's state of them.
type DigestResponse struct {
	Apps  []registry.AppKey `json:"apps"`
	State registry.Snapshot `json:"state"`
}

// validate checks a batch structurally. Semantic checks (status values,
// unknown hostnames of a set) are the registry's and yield per-op -400.
func (r *ReplicateRequest) validate(maxOps int) error {
	if len(r.Ops) == 0 {
		return errors.New("ops: must not be empty")
	}
	if len(r.Ops) > maxOps {
		return fmt.Errorf("ops: at most %d per request, got %d", maxOps, len(r.Ops))
	}
	for i := range r.Ops {
		if err := r.Ops[i].validate(); err != nil {
			return fmt.Errorf("ops[%d]: %w", i, err)
		}
	}
	return nil
}

func (o *Op) validate() error {
	if !o.Replication && !o.FromZone {
		// Only clients send "original, not from a zone" writes, and they use
		// the public endpoints; a peer always sets one of the two flags.
		return errors.New("replication or from_zone must be true")
	}
	switch o.Kind {
	case OpRegister, OpImport:
		if o.Instance == nil {
			return errors.New("instance: required")
		}
		if err := validKey(o.Instance.Key()); err != nil {
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
		if err := validKey(*o.Key); err != nil {
			return fmt.Errorf("key.%w", err)
		}
		if o.DirtyTimestamp <= 0 {
			return errors.New("dirty_timestamp: must be > 0")
		}
	case OpSet:
		if o.Set == nil {
			return errors.New("set: required")
		}
		if o.Set.Env == "" || o.Set.AppID == "" || o.Set.Zone == "" {
			return errors.New("set: env, appid and zone are required")
		}
		if len(o.Set.Hostnames) == 0 {
			return errors.New("set.hostnames: must not be empty")
		}
		if o.Set.SetTimestamp <= 0 {
			return errors.New("set.set_timestamp: must be > 0")
		}
	default:
		return fmt.Errorf("op: unknown kind %q", o.Kind)
	}
	return nil
}

func validKey(k registry.Key) error {
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

// cloneInstance deep-copies an instance so nodes never share maps/slices.
func cloneInstance(in registry.Instance) *registry.Instance {
	out := in
	out.Addrs = append([]string(nil), in.Addrs...)
	if in.Metadata != nil {
		out.Metadata = make(map[string]string, len(in.Metadata))
		for k, v := range in.Metadata {
			out.Metadata[k] = v
		}
	}
	return &out
}

func cloneMetaList(l []map[string]string) []map[string]string {
	if l == nil {
		return nil
	}
	out := make([]map[string]string, len(l))
	for i, m := range l {
		if m == nil {
			continue
		}
		c := make(map[string]string, len(m))
		for k, v := range m {
			c[k] = v
		}
		out[i] = c
	}
	return out
}
