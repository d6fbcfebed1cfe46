package wire

import "strconv"

// Hand-written encoders of the peer messages: every client write crosses a
// replicate batch once per peer, and encoding/json's reflection cost more
// CPU than everything else a peer does with an op. They write what
// encoding/json writes for the same value, except that instances are
// written by Instance.AppendJSON (nil addrs as [], nil metadata as {}).

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

func appendSetOp(b []byte, s *SetOp) []byte {
	b = append(b, `{"env":`...)
	b = AppendString(b, s.Env)
	b = append(b, `,"appid":`...)
	b = AppendString(b, s.AppID)
	b = append(b, `,"zone":`...)
	b = AppendString(b, s.Zone)
	b = append(b, `,"hostnames":`...)
	if s.Hostnames == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, h := range s.Hostnames {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, h)
		}
		b = append(b, ']')
	}
	if len(s.Statuses) > 0 {
		b = append(b, `,"statuses":[`...)
		for i, st := range s.Statuses {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(st), 10)
		}
		b = append(b, ']')
	}
	if len(s.Metadata) > 0 {
		b = append(b, `,"metadata":[`...)
		for i, m := range s.Metadata {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStringMap(b, m, false)
		}
		b = append(b, ']')
	}
	b = append(b, `,"set_timestamp":`...)
	b = strconv.AppendInt(b, s.SetTimestamp, 10)
	return append(b, '}')
}

// AppendOp appends one op of a replicate request (the fields of Op, with
// its omitempty rules).
func AppendOp(b []byte, op *Op) []byte {
	b = append(b, `{"op":`...)
	b = AppendString(b, string(op.Kind))
	b = append(b, `,"replication":`...)
	b = appendBool(b, op.Replication)
	b = append(b, `,"from_zone":`...)
	b = appendBool(b, op.FromZone)
	if op.Instance != nil {
		b = append(b, `,"instance":`...)
		b = op.Instance.AppendJSON(b)
	}
	if op.Key != nil {
		b = append(b, `,"key":`...)
		b = op.Key.AppendJSON(b)
	}
	if op.DirtyTimestamp != 0 {
		b = append(b, `,"dirty_timestamp":`...)
		b = strconv.AppendInt(b, op.DirtyTimestamp, 10)
	}
	if op.Set != nil {
		b = append(b, `,"set":`...)
		b = appendSetOp(b, op.Set)
	}
	if op.Owner != "" {
		b = append(b, `,"owner":`...)
		b = AppendString(b, op.Owner)
	}
	return append(b, '}')
}

// AppendReplicateHead and AppendReplicateTail frame the ops of a replicate
// request: head, op, ',', op, ..., tail.
func AppendReplicateHead(b []byte, from string) []byte {
	b = append(b, '{')
	if from != "" {
		b = append(b, `"from":`...)
		b = AppendString(b, from)
		b = append(b, ',')
	}
	return append(b, `"ops":[`...)
}

func AppendReplicateTail(b []byte) []byte { return append(b, "]}"...) }

func AppendReplicateRequest(b []byte, req *ReplicateRequest) []byte {
	if req.Ops == nil {
		b = append(b, '{')
		if req.From != "" {
			b = append(b, `"from":`...)
			b = AppendString(b, req.From)
			b = append(b, ',')
		}
		return append(b, `"ops":null}`...)
	}
	b = AppendReplicateHead(b, req.From)
	for i := range req.Ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendOp(b, &req.Ops[i])
	}
	return AppendReplicateTail(b)
}

func AppendReplicateResponse(b []byte, resp *ReplicateResponse) []byte {
	if resp.Results == nil {
		return append(b, `{"results":null}`...)
	}
	b = append(b, `{"results":[`...)
	for i := range resp.Results {
		r := &resp.Results[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"code":`...)
		b = strconv.AppendInt(b, int64(r.Code), 10)
		if r.Message != "" {
			b = append(b, `,"message":`...)
			b = AppendString(b, r.Message)
		}
		if r.Applied {
			b = append(b, `,"applied":true`...)
		}
		if r.Instance != nil {
			b = append(b, `,"instance":`...)
			b = r.Instance.AppendJSON(b)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}
