package wire

import (
	"encoding/json"
	"sort"
	"strconv"
)

// AppendString appends s as encoding/json encodes it (HTML-safe escaping,
// invalid UTF-8 replaced by U+FFFD). Plain printable ASCII, which is what
// registries hold, is copied directly; anything else goes through
// encoding/json so the output stays identical.
func AppendString[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(string(s)) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendJSON appends the instance's wire JSON (14 keys, spec 3.1) as
// encoding/json encodes it, except that nil addrs are [] and nil metadata
// is {} (spec 3.1.3, 3.2.4): what answers carry, and what every decoder
// reads as the same empty value. Metadata keys are sorted, as
// encoding/json sorts map keys.
func (in *Instance) AppendJSON(b []byte) []byte {
	b = append(b, `{"region":`...)
	b = AppendString(b, in.Region)
	b = append(b, `,"zone":`...)
	b = AppendString(b, in.Zone)
	b = append(b, `,"env":`...)
	b = AppendString(b, in.Env)
	b = append(b, `,"appid":`...)
	b = AppendString(b, in.AppID)
	b = append(b, `,"hostname":`...)
	b = AppendString(b, in.Hostname)
	b = append(b, `,"addrs":[`...)
	for i, a := range in.Addrs {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, a)
	}
	b = append(b, `],"version":`...)
	b = AppendString(b, in.Version)
	b = append(b, `,"metadata":`...)
	b = appendStringMap(b, in.Metadata, true)
	b = append(b, `,"status":`...)
	b = strconv.AppendUint(b, uint64(in.Status), 10)
	b = append(b, `,"reg_timestamp":`...)
	b = strconv.AppendInt(b, in.RegTimestamp, 10)
	b = append(b, `,"up_timestamp":`...)
	b = strconv.AppendInt(b, in.UpTimestamp, 10)
	b = append(b, `,"renew_timestamp":`...)
	b = strconv.AppendInt(b, in.RenewTimestamp, 10)
	b = append(b, `,"dirty_timestamp":`...)
	b = strconv.AppendInt(b, in.DirtyTimestamp, 10)
	b = append(b, `,"latest_timestamp":`...)
	b = strconv.AppendInt(b, in.LatestTimestamp, 10)
	return append(b, '}')
}

// AppendJSON appends the key as encoding/json encodes it.
func (k *Key) AppendJSON(b []byte) []byte {
	b = append(b, `{"env":`...)
	b = AppendString(b, k.Env)
	b = append(b, `,"appid":`...)
	b = AppendString(b, k.AppID)
	b = append(b, `,"zone":`...)
	b = AppendString(b, k.Zone)
	b = append(b, `,"hostname":`...)
	b = AppendString(b, k.Hostname)
	return append(b, '}')
}

// AppendJSON appends the tombstone as encoding/json encodes it.
func (t *Tombstone) AppendJSON(b []byte) []byte {
	b = append(b, `{"key":`...)
	b = t.Key.AppendJSON(b)
	b = append(b, `,"at":`...)
	b = strconv.AppendInt(b, t.At, 10)
	return append(b, '}')
}

// appendStringMap appends m with sorted keys; nil is null, unless emptyObj
// (answers write {}).
func appendStringMap(b []byte, m map[string]string, emptyObj bool) []byte {
	if m == nil && !emptyObj {
		return append(b, "null"...)
	}
	var arr [8]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, k)
		b = append(b, ':')
		b = AppendString(b, m[k])
	}
	return append(b, '}')
}
