package syncup

import (
	"context"

	"github.com/discovery-go/discovery/api/wire"
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

// RawReplicator is an optional capability of a Transport, checked once when
// the Cluster is built: it sends a replicate request body already encoded
// (wire.AppendReplicateHead, one wire.AppendOp per op, comma-separated,
// wire.AppendReplicateTail). With it, each op is encoded once and the
// encoding shared by every peer queue; without it, Replicate gets the ops.
type RawReplicator interface {
	ReplicateRaw(ctx context.Context, addr string, body []byte) (*ReplicateResponse, error)
}

// PermanentError marks a failure that resending the same request cannot
// fix (the peer rejected the payload).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// The peer protocol's messages are the wire package's (their one
// definition, with their encoders and decoders).
type (
	OpKind            = wire.OpKind
	Op                = wire.Op
	SetOp             = wire.SetOp
	OpResult          = wire.OpResult
	ReplicateRequest  = wire.ReplicateRequest
	ReplicateResponse = wire.ReplicateResponse
	SnapshotItem      = wire.SnapshotItem
	AppDigest         = wire.AppDigest
	DigestRequest     = wire.DigestRequest
	DigestResponse    = wire.DigestResponse
)

// Operation kinds of the replicate endpoint.
const (
	OpRegister = wire.OpRegister
	OpRenew    = wire.OpRenew
	OpCancel   = wire.OpCancel
	OpSet      = wire.OpSet
	OpImport   = wire.OpImport
)

// Result codes of one op (the discovery codes of spec 2.5 / 7.3).
const (
	CodeOK         = wire.CodeOK
	CodeInvalid    = wire.CodeBadRequest
	CodeNotFound   = wire.CodeNotFound // renew: receiver has no copy or an older one; send a register
	CodeConflict   = wire.CodeConflict // renew: receiver's copy is newer; Instance holds it
	CodeServerFail = wire.CodeServerError
)

func setOpFrom(r registry.SetRequest) *SetOp {
	return &SetOp{
		Env: r.Env, AppID: r.AppID, Zone: r.Zone,
		Hostnames:    append([]string(nil), r.Hostnames...),
		Statuses:     append([]uint32(nil), r.Statuses...),
		Metadata:     cloneMetaList(r.Metadata),
		SetTimestamp: r.SetTimestamp,
	}
}

func setRequest(s *SetOp) registry.SetRequest {
	return registry.SetRequest{
		Env: s.Env, AppID: s.AppID, Zone: s.Zone,
		Hostnames: s.Hostnames, Statuses: s.Statuses, Metadata: s.Metadata,
		SetTimestamp: s.SetTimestamp,
	}
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
