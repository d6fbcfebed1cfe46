package wire

import "strings"

// RepairJoinedAddrs undoes the original's Defect D4: a multi-address
// instance forwarded by a legacy node arrives (and is stored there) with
// its addrs comma-joined in one value ("grpc://a:1,http://a:2"). An addr
// that holds further "scheme://" URLs after a comma is split back into
// them; no valid scheme://host:port addr contains a comma, so nothing else
// changes. It reports whether it changed anything.
func RepairJoinedAddrs(in *Instance) bool {
	addrs, changed := SplitJoinedAddrs(in.Addrs)
	in.Addrs = addrs
	return changed
}

// SplitJoinedAddrs is RepairJoinedAddrs on a list of addrs: it returns
// addrs itself when nothing is joined.
func SplitJoinedAddrs(addrs []string) ([]string, bool) {
	changed := false
	var out []string
	for i, a := range addrs {
		parts := splitJoined(a)
		if len(parts) == 1 {
			if changed {
				out = append(out, a)
			}
			continue
		}
		if !changed {
			out = append(make([]string, 0, len(addrs)+len(parts)), addrs[:i]...)
			changed = true
		}
		out = append(out, parts...)
	}
	if !changed {
		return addrs, false
	}
	return out, true
}

// splitJoined splits a at commas that start another URL (",scheme://").
func splitJoined(a string) []string {
	if !strings.Contains(a, ",") {
		return []string{a}
	}
	var parts []string
	for _, p := range strings.Split(a, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !strings.Contains(p, "://") {
			return []string{a} // a comma inside something else: leave it to validation
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return []string{a}
	}
	return parts
}
