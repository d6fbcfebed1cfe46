package harness

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// ContentKey is what must agree between nodes (of either kind) for one
// instance once they converged: everything but the timestamps each node
// stamps itself (renew, reg, up, latest).
func ContentKey(in Instance) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(in.Metadata)) {
		fmt.Fprintf(&b, "%s=%s,", k, in.Metadata[k])
	}
	return fmt.Sprintf("%s|%s|%s|%s|%q|%s|%d|%d|%s", in.Region, in.Zone, in.Env, in.Hostname, in.Addrs, in.Version, in.Status, in.DirtyTimestamp, b.String())
}

// SameContent reports how the copies of each appid held by the servers
// (names[i], read by fetch(i, appid)) differ from the first server's.
func SameContent(names []string, fetch func(i int, appid string) ([]Instance, error), appids ...string) error {
	var errs []error
	for _, appid := range appids {
		var ref []string
		for i, name := range names {
			m, err := fetch(i, appid)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var keys []string
			for _, in := range m {
				keys = append(keys, ContentKey(in))
			}
			slices.Sort(keys)
			if i == 0 {
				ref = keys
			} else if !slices.Equal(keys, ref) {
				errs = append(errs, fmt.Errorf("%s %s differs from %s:\n  %v\n  %v", name, appid, names[0], keys, ref))
			}
		}
	}
	return errors.Join(errs...)
}

// KratosClientBinary builds test/kratos/kratosclient, the real kratos
// v0.6.0 client, once per test binary. The nested module has its own
// go.mod (kratos' 2020 dependencies clash with ours), so `go test ./...` at
// the root never compiles it as our code.
func KratosClientBinary(tb testing.TB) string {
	tb.Helper()
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return BuildPackage(tb, root+"/test/kratos", "./kratosclient", "kratosclient")
}
