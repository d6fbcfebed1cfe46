package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/discovery-go/discovery/registry"
)

// Parameter binding (spec 2.2, 2.3). Everything here is a plain function over
// url.Values so it can be fuzzed without HTTP: the handlers only merge the
// body and the query (mergeForm) and call one parse* function per route.

// paramError is a -400 caused by one parameter. Its text names the parameter
// first ("status: must be 1 or 2, got 3") and becomes the envelope message.
type paramError struct {
	field  string
	reason string
}

func (e *paramError) Error() string { return e.field + ": " + e.reason }

func perr(field, format string, args ...any) error {
	return &paramError{field: field, reason: fmt.Sprintf(format, args...)}
}

// quoteTrunc quotes an offending value for an error message, cut so a huge
// value is not echoed back in full.
func quoteTrunc(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// parseQuery parses a raw query string strictly: a malformed escape or a ';'
// separator is a -400 rather than a silently dropped parameter.
func parseQuery(raw string) (url.Values, error) {
	v, err := parseForm(raw)
	if err != nil {
		return nil, perr("query", "malformed query string: %v", err)
	}
	return v, nil
}

// parseURLEncoded parses an application/x-www-form-urlencoded body.
func parseURLEncoded(body string) (url.Values, error) {
	v, err := parseForm(body)
	if err != nil {
		return nil, formBodyError(err)
	}
	return v, nil
}

func formBodyError(err error) error { return perr("body", "malformed form body: %v", err) }

// maxFormParams is net/url's own bound on the parameters of one query
// (GODEBUG urlmaxqueryparams, default 10 000), kept so a form is refused
// where url.ParseQuery would refuse it.
const maxFormParams = 10_000

var (
	errFormSemicolon = errors.New("invalid semicolon separator in query")
	errFormTooMany   = fmt.Errorf("more than %d parameters", maxFormParams)
)

// parseForm is url.ParseQuery with the same result for every input (a
// differential fuzz test holds it to that) and fewer allocations, which the
// register path pays on every request: the values of all parameters share one
// backing array, the map is sized once, and a name or value without '%' or
// '+' is the input's own substring. It stops at the first malformed
// parameter, whose error is all the callers use.
func parseForm(raw string) (url.Values, error) {
	m, _, err := parseFormInto(nil, nil, raw)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// parseFormInto is parseForm into m (empty, or nil for a new one) with the
// values backed by vals where it has room (lean writes pass pooled ones).
// It returns the map (partly filled on an error) and the backing it used.
func parseFormInto(m url.Values, vals []string, raw string) (url.Values, []string, error) {
	n := strings.Count(raw, "&") + 1
	if n > maxFormParams {
		return m, vals, errFormTooMany
	}
	// Sized from the separators, bounded: a body of nothing but '&' must
	// not make every request allocate for 10 000 parameters.
	if m == nil {
		m = make(url.Values, min(n, 64))
	}
	if k := min(n, 64); cap(vals) < k {
		vals = make([]string, k)
	} else {
		vals = vals[:cap(vals)]
	}
	used := 0
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if strings.IndexByte(kv, ';') >= 0 {
			return m, vals, errFormSemicolon
		}
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err := formUnescape(k)
		if err != nil {
			return m, vals, err
		}
		if v, err = formUnescape(v); err != nil {
			return m, vals, err
		}
		if old, ok := m[k]; ok {
			m[k] = append(old, v)
			continue
		}
		if used == len(vals) {
			m[k] = []string{v}
			continue
		}
		vals[used] = v
		m[k] = vals[used : used+1 : used+1] // full slice: an append copies
		used++
	}
	return m, vals, nil
}

func formUnescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// mergeForm combines POST body and query values the way the original's
// Request.ParseForm does (spec 2.2.2): per name, body values first, then
// query values. Single-valued parameters take the first value, so the body
// wins; lists see body values then query values.
func mergeForm(body, query url.Values) url.Values {
	out := make(url.Values, len(body)+len(query))
	for k, vs := range body {
		out[k] = append(out[k], vs...)
	}
	for k, vs := range query {
		out[k] = append(out[k], vs...)
	}
	return out
}

// formString returns the first value of name ("" when absent), bounded by max
// bytes.
func formString(v url.Values, name string, max int) (string, error) {
	vs := v[name]
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs[0]) > max {
		return "", perr(name, "longer than %d bytes", max)
	}
	return vs[0], nil
}

// requiredString is formString that rejects an empty value.
func requiredString(v url.Values, name string, max int) (string, error) {
	s, err := formString(v, name, max)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", perr(name, "required")
	}
	return s, nil
}

// formList returns every non-empty value of name in order (spec 2.3.1, 2.3.3:
// repeated names, empty elements dropped, never split on commas). At most
// maxCount elements of at most maxLen bytes each.
func formList(v url.Values, name string, maxCount, maxLen int) ([]string, error) {
	vs := v[name]
	out := make([]string, 0, min(len(vs), maxCount))
	for _, s := range vs {
		if s == "" {
			continue
		}
		if len(out) == maxCount {
			return nil, perr(name, "more than %d values", maxCount)
		}
		if len(s) > maxLen {
			return nil, perr(name, "value longer than %d bytes", maxLen)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseInt64 parses a base-10 int64; "" is 0 (spec 2.3.5).
func parseInt64(name, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, perr(name, "invalid integer %s: %v", quoteTrunc(s), numErrReason(err))
	}
	return n, nil
}

// parseUint32 parses a base-10 uint32; "" is 0 (spec 2.3.5: status).
func parseUint32(name, s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, perr(name, "invalid unsigned integer %s: %v", quoteTrunc(s), numErrReason(err))
	}
	return uint32(n), nil
}

func numErrReason(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

func formInt64(v url.Values, name string) (int64, error) {
	return parseInt64(name, v.Get(name))
}

// formTimestamp is a non-negative int64: a negative nanosecond timestamp can
// only be garbage and would poison the dirty-timestamp ordering.
func formTimestamp(v url.Values, name string) (int64, error) {
	n, err := formInt64(v, name)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, perr(name, "must not be negative, got %d", n)
	}
	return n, nil
}

// formBool follows spec 2.3.6: the strconv.ParseBool spellings of true are
// true, everything else (including "yes") is false without error.
func formBool(v url.Values, name string) bool {
	s := v.Get(name)
	if s == "" { // the usual case; ParseBool would allocate its error
		return false
	}
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

// parseMetadata parses one metadata parameter (spec 3.2): "" or JSON null →
// no metadata; otherwise a JSON object whose values are strings, or numbers /
// booleans (stored as their literal text), or null (stored as ""). Nested
// values, other JSON and invalid JSON are -400 naming field.
func parseMetadata(field, s string, l Limits) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > l.MaxMetadataBytes {
		return nil, perr(field, "longer than %d bytes", l.MaxMetadataBytes)
	}
	// Fastest path: a flat object of plain ASCII strings without escapes,
	// which is what services send; then an object of strings, null values
	// becoming "" as below. Anything else is parsed value by value.
	if strs, ok := parsePlainObject(s, l.MaxMetadataKeys); ok {
		if len(strs) > l.MaxMetadataKeys {
			return nil, perr(field, "more than %d keys", l.MaxMetadataKeys)
		}
		return strs, nil
	}
	var strs map[string]string
	if json.Unmarshal([]byte(s), &strs) == nil {
		if len(strs) > l.MaxMetadataKeys {
			return nil, perr(field, "more than %d keys", l.MaxMetadataKeys)
		}
		if strs == nil {
			return nil, nil
		}
		return strs, nil
	}
	return parseMetadataValues(field, s, l)
}

// parsePlainObject parses s when it is a JSON object whose keys and values
// are all strings of printable ASCII without a backslash (so no escapes
// and nothing encoding/json would replace or refuse), with JSON whitespace
// between tokens: a subset on which it gives exactly what encoding/json
// gives (later duplicates win). ok is false for anything else, which
// the callers parse with encoding/json. It stops after maxKeys+1 keys, so the
// caller's count check still fires without parsing the rest.
func parsePlainObject(s string, maxKeys int) (map[string]string, bool) {
	i := skipJSONSpace(s, 0)
	if i == len(s) || s[i] != '{' {
		return nil, false
	}
	i = skipJSONSpace(s, i+1)
	m := make(map[string]string, min(strings.Count(s, ":"), maxKeys+1))
	if i < len(s) && s[i] == '}' {
		return m, skipJSONSpace(s, i+1) == len(s)
	}
	for {
		k, j, ok := plainString(s, i)
		if !ok {
			return nil, false
		}
		j = skipJSONSpace(s, j)
		if j == len(s) || s[j] != ':' {
			return nil, false
		}
		v, j, ok := plainString(s, skipJSONSpace(s, j+1))
		if !ok {
			return nil, false
		}
		m[k] = v
		if len(m) > maxKeys {
			return m, true
		}
		j = skipJSONSpace(s, j)
		if j == len(s) {
			return nil, false
		}
		switch s[j] {
		case ',':
			i = skipJSONSpace(s, j+1)
		case '}':
			return m, skipJSONSpace(s, j+1) == len(s)
		default:
			return nil, false
		}
	}
}

// plainString reads a JSON string of printable ASCII without '\\' at s[i];
// it returns the string (a substring of s) and the index after its quote.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", 0, false
		}
	}
	return "", 0, false
}

func skipJSONSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// parseMetadataValues is parseMetadata's general path: value by value.
func parseMetadataValues(field, s string, l Limits) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, perr(field, "not a JSON object: %v", err)
	}
	if raw == nil {
		return nil, nil
	}
	if len(raw) > l.MaxMetadataKeys {
		return nil, perr(field, "more than %d keys", l.MaxMetadataKeys)
	}
	out := make(map[string]string, len(raw))
	// Sorted so an error always names the same key.
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		val := bytes.TrimSpace(raw[k])
		if len(val) == 0 {
			return nil, perr(field, "key %s has no value", quoteTrunc(k))
		}
		switch val[0] {
		case '"':
			var str string
			if err := json.Unmarshal(val, &str); err != nil {
				return nil, perr(field, "key %s: %v", quoteTrunc(k), err)
			}
			out[k] = str
		case 'n': // null
			out[k] = ""
		case '{', '[':
			return nil, perr(field, "key %s holds a nested object or array; values must be strings", quoteTrunc(k))
		default: // number, true, false: keep the literal text
			out[k] = string(val)
		}
	}
	return out, nil
}

// keyParams reads the instance key (zone, env, appid, hostname), all required.
func keyParams(v url.Values, l Limits) (registry.Key, error) {
	var k registry.Key
	var err error
	if k.Zone, err = requiredString(v, "zone", l.MaxStringLen); err != nil {
		return k, err
	}
	if k.Env, err = requiredString(v, "env", l.MaxStringLen); err != nil {
		return k, err
	}
	if k.AppID, err = requiredString(v, "appid", l.MaxStringLen); err != nil {
		return k, err
	}
	if k.Hostname, err = requiredString(v, "hostname", l.MaxStringLen); err != nil {
		return k, err
	}
	return k, nil
}

// writeFlags are the replication parameters common to writes (spec 4.0).
type writeFlags struct {
	Replication bool // forwarded by a same-zone peer: apply, never forward
	FromZone    bool // forwarded by a node: never forward to other zones
}

func formFlags(v url.Values) writeFlags {
	return writeFlags{Replication: formBool(v, "replication"), FromZone: formBool(v, "from_zone")}
}

// registerParams is a parsed POST /discovery/register (spec 4.1).
type registerParams struct {
	Instance registry.Instance // DirtyTimestamp: sender's value, 0 = now
	Latest   int64             // sender's latest_timestamp hint
	writeFlags
}

func parseRegister(v url.Values, l Limits) (registerParams, error) {
	var p registerParams
	k, err := keyParams(v, l)
	if err != nil {
		return p, err
	}
	in := registry.Instance{Zone: k.Zone, Env: k.Env, AppID: k.AppID, Hostname: k.Hostname}
	if in.Status, err = parseUint32("status", v.Get("status")); err != nil {
		return p, err
	}
	switch in.Status {
	case 0:
		return p, perr("status", "required (1 or 2)")
	case registry.StatusUp, registry.StatusWaiting:
	default:
		return p, perr("status", "must be 1 or 2, got %d", in.Status)
	}
	if in.Addrs, err = formList(v, "addrs", l.MaxAddrs, l.MaxAddrLen); err != nil {
		return p, err
	}
	if len(in.Addrs) == 0 {
		return p, perr("addrs", "required (at least one)")
	}
	if in.Region, err = formString(v, "region", l.MaxStringLen); err != nil {
		return p, err
	}
	if in.Version, err = formString(v, "version", l.MaxStringLen); err != nil {
		return p, err
	}
	if in.Metadata, err = parseMetadata("metadata", v.Get("metadata"), l); err != nil {
		return p, err
	}
	if in.DirtyTimestamp, err = formTimestamp(v, "dirty_timestamp"); err != nil {
		return p, err
	}
	if p.Latest, err = formTimestamp(v, "latest_timestamp"); err != nil {
		return p, err
	}
	// reg_timestamp is sent by original peers and ignored (spec 4.0), but a
	// malformed integer is still a malformed request.
	if _, err = formInt64(v, "reg_timestamp"); err != nil {
		return p, err
	}
	p.Instance = in
	p.writeFlags = formFlags(v)
	return p, nil
}

// renewParams is a parsed POST /discovery/renew (spec 4.2).
type renewParams struct {
	Key   registry.Key
	Dirty int64
	writeFlags
}

func parseRenew(v url.Values, l Limits) (renewParams, error) {
	var p renewParams
	var err error
	if p.Key, err = keyParams(v, l); err != nil {
		return p, err
	}
	if _, err = formString(v, "region", l.MaxStringLen); err != nil {
		return p, err
	}
	if p.Dirty, err = formTimestamp(v, "dirty_timestamp"); err != nil {
		return p, err
	}
	p.writeFlags = formFlags(v)
	return p, nil
}

// cancelParams is a parsed POST /discovery/cancel (spec 4.3).
type cancelParams struct {
	Key    registry.Key
	Latest int64
	writeFlags
}

func parseCancel(v url.Values, l Limits) (cancelParams, error) {
	var p cancelParams
	var err error
	if p.Key, err = keyParams(v, l); err != nil {
		return p, err
	}
	if _, err = formString(v, "region", l.MaxStringLen); err != nil {
		return p, err
	}
	if p.Latest, err = formTimestamp(v, "latest_timestamp"); err != nil {
		return p, err
	}
	p.writeFlags = formFlags(v)
	return p, nil
}

// setParams is a parsed POST /discovery/set (spec 4.4).
type setParams struct {
	Req registry.SetRequest
	writeFlags
}

func parseSet(v url.Values, l Limits) (setParams, error) {
	var p setParams
	r := &p.Req
	var err error
	if r.Zone, err = requiredString(v, "zone", l.MaxStringLen); err != nil {
		return p, err
	}
	if r.Env, err = requiredString(v, "env", l.MaxStringLen); err != nil {
		return p, err
	}
	if r.AppID, err = requiredString(v, "appid", l.MaxStringLen); err != nil {
		return p, err
	}
	if r.Hostnames, err = formList(v, "hostname", l.MaxSetHostnames, l.MaxStringLen); err != nil {
		return p, err
	}
	if len(r.Hostnames) == 0 {
		return p, perr("hostname", "required (at least one)")
	}
	statuses, err := formList(v, "status", l.MaxSetHostnames, l.MaxStringLen)
	if err != nil {
		return p, err
	}
	if len(statuses) > 0 && len(statuses) != len(r.Hostnames) {
		return p, perr("status", "%d values for %d hostnames", len(statuses), len(r.Hostnames))
	}
	for _, s := range statuses {
		st, err := parseUint32("status", s)
		if err != nil {
			return p, err
		}
		if st != registry.StatusUp && st != registry.StatusWaiting {
			return p, perr("status", "must be 1 or 2, got %d", st)
		}
		r.Statuses = append(r.Statuses, st)
	}
	metas, err := formList(v, "metadata", l.MaxSetHostnames, l.MaxMetadataBytes)
	if err != nil {
		return p, err
	}
	if len(metas) > 0 && len(metas) != len(r.Hostnames) {
		return p, perr("metadata", "%d values for %d hostnames", len(metas), len(r.Hostnames))
	}
	for _, s := range metas {
		md, err := parseMetadata("metadata", s, l)
		if err != nil {
			return p, err
		}
		r.Metadata = append(r.Metadata, md)
	}
	if _, err = formString(v, "region", l.MaxStringLen); err != nil {
		return p, err
	}
	if r.SetTimestamp, err = formTimestamp(v, "set_timestamp"); err != nil {
		return p, err
	}
	p.writeFlags = formFlags(v)
	return p, nil
}

// fetchParams is a parsed fetch or fetchs (spec 4.6, 4.7).
type fetchParams struct {
	Env    string
	AppIDs []string // exactly one for fetch
	Zone   string
	Status uint32 // bit mask 1/2/3
}

func parseFetch(v url.Values, l Limits, multi bool) (fetchParams, error) {
	var p fetchParams
	var err error
	if p.Env, err = requiredString(v, "env", l.MaxStringLen); err != nil {
		return p, err
	}
	if multi {
		if p.AppIDs, err = formList(v, "appid", l.MaxAppIDs, l.MaxStringLen); err != nil {
			return p, err
		}
		if len(p.AppIDs) == 0 {
			return p, perr("appid", "required (at least one)")
		}
	} else {
		appid, err := requiredString(v, "appid", l.MaxStringLen)
		if err != nil {
			return p, err
		}
		p.AppIDs = []string{appid}
	}
	if p.Status, err = parseUint32("status", v.Get("status")); err != nil {
		return p, err
	}
	if p.Status == 0 {
		return p, perr("status", "required (bit mask: 1 up, 2 waiting, 3 both)")
	}
	if p.Zone, err = formString(v, "zone", l.MaxStringLen); err != nil {
		return p, err
	}
	return p, nil
}

// pollParams is a parsed poll or polls (spec 4.8, 4.9).
type pollParams struct {
	Req      registry.PollRequest
	Hostname string // required, never used to group requests (spec 5.4.2)
}

func parsePoll(v url.Values, l Limits, multi bool) (pollParams, error) {
	var p pollParams
	r := &p.Req
	var err error
	if r.Env, err = requiredString(v, "env", l.MaxStringLen); err != nil {
		return p, err
	}
	if multi {
		if r.AppIDs, err = formList(v, "appid", l.MaxAppIDs, l.MaxStringLen); err != nil {
			return p, err
		}
		if len(r.AppIDs) == 0 {
			return p, perr("appid", "required (at least one)")
		}
		// Counted after dropping empty values (spec 2.3.3, 4.9.1).
		ts, err := formList(v, "latest_timestamp", l.MaxAppIDs, l.MaxStringLen)
		if err != nil {
			return p, err
		}
		if len(ts) != len(r.AppIDs) {
			return p, perr("latest_timestamp", "%d values for %d appids (one per appid, same order)", len(ts), len(r.AppIDs))
		}
		r.Latest = make([]int64, len(ts))
		for i, s := range ts {
			if r.Latest[i], err = parseInt64("latest_timestamp", s); err != nil {
				return p, err
			}
		}
	} else {
		appid, err := requiredString(v, "appid", l.MaxStringLen)
		if err != nil {
			return p, err
		}
		lt, err := formInt64(v, "latest_timestamp")
		if err != nil {
			return p, err
		}
		r.AppIDs, r.Latest = []string{appid}, []int64{lt}
	}
	if p.Hostname, err = requiredString(v, "hostname", l.MaxStringLen); err != nil {
		return p, err
	}
	if r.Zone, err = formString(v, "zone", l.MaxStringLen); err != nil {
		return p, err
	}
	return p, nil
}

// targetParams is a parsed GET /discovery/prometheus/targets (spec 10.3).
type targetParams struct {
	Env    string
	AppIDs []string
	Zone   string
	Scheme string
}

func parseTargets(v url.Values, l Limits) (targetParams, error) {
	var p targetParams
	var err error
	if p.Env, err = formString(v, "env", l.MaxStringLen); err != nil {
		return p, err
	}
	if p.AppIDs, err = formList(v, "appid", l.MaxAppIDs, l.MaxStringLen); err != nil {
		return p, err
	}
	// A set: an appid asked twice must not list its targets twice.
	slices.Sort(p.AppIDs)
	p.AppIDs = slices.Compact(p.AppIDs)
	if p.Zone, err = formString(v, "zone", l.MaxStringLen); err != nil {
		return p, err
	}
	if p.Scheme, err = formString(v, "scheme", l.MaxStringLen); err != nil {
		return p, err
	}
	if p.Scheme == "" {
		p.Scheme = "http"
	}
	return p, nil
}
