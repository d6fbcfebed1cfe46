package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// Legacy nodes: processes of test/legacy/cmd/legacynode, the fake of the
// ORIGINAL bilibili/discovery node (package test/legacy, with its defects),
// for mixed-cluster (migration) tests:
//
//	ls := harness.StartLegacyCluster(t, 2, harness.LegacyOptions{RenewInterval: 500 * time.Millisecond})
//	n := harness.StartNode(t, harness.Options{ExtraEnv: map[string]string{
//		"DISCOVERY_CLUSTER_LEGACY_NODES": harness.LegacyAddrs(ls...)}})
//	ls[0].Kill(t)
//	l := ls[0].Restart(t, func(o *harness.LegacyOptions) { o.Nodes = nil }) // same address, empty
//
// Every legacy node listens on a loopback address of its own (127.0.0.2,
// 127.0.0.3, ...; Linux routes all of 127/8 to lo) and sends its requests
// from it, while our nodes and the test use 127.0.0.1: a node of ours that
// trusts the legacy nodes by source address then trusts exactly them.

// LegacyOptions describe one legacy node process.
type LegacyOptions struct {
	// Hostname is its own infra.discovery record's hostname. Empty: a
	// unique "legacyN".
	Hostname string
	// Zone, Env, Region: empty means the Default* constants (not the
	// binary's kratos-like defaults), so it sits beside our nodes.
	Zone, Env, Region string
	// Addr is the listen (and advertised) host:port. Empty: port 0 on the
	// next unused loopback IP (NextLoopbackIP). Restart reuses the bound one.
	Addr string
	// Nodes are the same-zone seeds (--nodes): it syncs from them at start
	// and forwards to them until it learned its peers from infra.discovery.
	Nodes []string
	// Durations of the original's timers; zero: the binary's default
	// (renew 30 s, evict scan 60 s, evict after 90 s, forward 3 s, poll
	// hold 30 s).
	RenewInterval, EvictInterval, EvictAfter, ForwardTimeout, PollHold time.Duration
	// Args are extra command-line arguments.
	Args []string
	// ReadyTimeout bounds the wait for the address file (written once the
	// node serves, after its startup sync). Zero: 20 s.
	ReadyTimeout time.Duration
}

func (o LegacyOptions) withDefaults() LegacyOptions {
	identityDefaults(&o.Hostname, &o.Zone, &o.Env, &o.Region, "legacy", &legacySeq)
	if o.Addr == "" {
		o.Addr = NextLoopbackIP() + ":0"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 20 * time.Second
	}
	o.Nodes = slices.Clone(o.Nodes)
	o.Args = slices.Clone(o.Args)
	return o
}

func (o LegacyOptions) args(addrFile string) []string {
	a := []string{
		"--addr", o.Addr, "--hostname", o.Hostname, "--zone", o.Zone, "--env", o.Env, "--region", o.Region,
		"--addr-file", addrFile,
	}
	if len(o.Nodes) > 0 {
		a = append(a, "--nodes", strings.Join(o.Nodes, ","))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--renew-interval", o.RenewInterval}, {"--evict-interval", o.EvictInterval}, {"--evict-after", o.EvictAfter},
		{"--forward-timeout", o.ForwardTimeout}, {"--poll-hold", o.PollHold},
	} {
		if d.v > 0 {
			a = append(a, d.flag, d.v.String())
		}
	}
	return append(a, o.Args...)
}

var (
	legacySeq   atomic.Int64
	loopbackSeq atomic.Int64
)

// NextLoopbackIP returns a loopback address no earlier call of this test
// binary returned: 127.0.0.2 ... 127.0.0.254, then 127.0.1.2, ...
// (never 127.0.0.1, where our nodes, clients and the test live).
func NextLoopbackIP() string {
	k := loopbackSeq.Add(1) - 1
	return fmt.Sprintf("127.0.%d.%d", (k/253)%256, k%253+2)
}

// LegacyNode is one running (or finished) legacy node process. Restart
// returns a new LegacyNode at the same address.
type LegacyNode struct {
	// Name is its hostname (its own infra.discovery record).
	Name string
	// Opts are the options it was started with (defaults applied; Addr as
	// given, possibly with port 0).
	Opts LegacyOptions
	// HTTP is the host:port it listens on and advertises.
	HTTP string
	// LogPath holds its log (stderr).
	LogPath string
	// Client talks to HTTP.
	Client *Client

	proc    *Process
	started time.Time
}

// LegacyBinary returns the path of the legacynode binary, built once per
// test binary.
func LegacyBinary(tb testing.TB) string {
	tb.Helper()
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return BuildPackage(tb, root, "./test/legacy/cmd/legacynode", "legacynode")
}

// StartLegacy starts one legacy node and returns once it serves (its
// startup sync from opts.Nodes done, its own record registered). It is
// killed when the test ends; its log is printed if the test failed.
func StartLegacy(tb testing.TB, opts LegacyOptions) *LegacyNode {
	tb.Helper()
	l, err := startLegacy(tb, LegacyBinary(tb), opts)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return l
}

func startLegacy(tb testing.TB, bin string, opts LegacyOptions) (*LegacyNode, error) {
	tb.Helper()
	opts = opts.withDefaults()
	addrPath := filepath.Join(tb.TempDir(), "legacy-addr.json")
	l := &LegacyNode{Name: opts.Hostname, Opts: opts, started: time.Now()}
	l.proc = StartProcess(tb, "legacy-"+opts.Hostname, bin, opts.args(addrPath), nil)
	l.LogPath = l.proc.LogPath
	var addr string
	ctx, cancel := procContext(l.proc)
	defer cancel()
	_, err := testkit.WithinContext(ctx, opts.ReadyTimeout, func() error {
		b, err := os.ReadFile(addrPath)
		if err != nil {
			return err
		}
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if addr = m["http"]; addr == "" {
			return fmt.Errorf("no http key in %s", b)
		}
		return nil
	})
	if err != nil || addr == "" {
		select {
		case <-l.proc.Done():
			return nil, fmt.Errorf("legacy node %s exited before serving (%w)", l.Name, l.proc.exitErr)
		default:
		}
		return nil, fmt.Errorf("legacy node %s: no address file within %s: %w", l.Name, opts.ReadyTimeout, err)
	}
	l.HTTP = addr
	l.Client = NewClient(addr)
	tb.Cleanup(l.Client.Close)
	return l, nil
}

// procContext is cancelled when p exits (or cancel is called).
func procContext(p *Process) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// StartLegacyCluster starts n legacy nodes of one zone, each on its own
// loopback IP, node i seeded (--nodes) with nodes 0..i-1 (and opts.Nodes),
// as an original cluster is configured, and returns once every node lists
// all n in /discovery/nodes and holds their n infra.discovery records.
// opts.Hostname and opts.Addr must be empty.
func StartLegacyCluster(tb testing.TB, n int, opts LegacyOptions) []*LegacyNode {
	tb.Helper()
	if opts.Hostname != "" || opts.Addr != "" {
		tb.Fatalf("harness: StartLegacyCluster: Hostname and Addr must be empty")
	}
	bin := LegacyBinary(tb)
	var out []*LegacyNode
	for range n {
		o := opts
		o.Nodes = append(slices.Clone(opts.Nodes), LegacyAddrList(out...)...)
		l, err := startLegacy(tb, bin, o)
		if err != nil {
			tb.Fatalf("harness: %v", err)
		}
		out = append(out, l)
	}
	testkit.Eventually(tb, FormTimeout, "legacy cluster formed", func() error {
		return CheckLegacyFormed(out, LegacyAddrList(out...))
	})
	return out
}

// CheckLegacyFormed reports how the given legacy nodes' views differ from
// "each lists at least want (host:port) in /discovery/nodes and holds an UP
// infra.discovery record with each of them".
func CheckLegacyFormed(nodes []*LegacyNode, want []string) error {
	var errs []error
	for _, l := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, _, err := l.Client.Nodes(ctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("legacy %s nodes: %w", l.Name, err))
			continue
		}
		var have []string
		for _, e := range list {
			have = append(have, e.Addr)
		}
		recs, err := l.InfraAddrs()
		if err != nil {
			errs = append(errs, fmt.Errorf("legacy %s infra.discovery: %w", l.Name, err))
			continue
		}
		for _, w := range want {
			if !slices.Contains(have, w) {
				errs = append(errs, fmt.Errorf("legacy %s: %s not in its node list %v", l.Name, w, have))
			}
			if !slices.Contains(recs, w) {
				errs = append(errs, fmt.Errorf("legacy %s: no infra.discovery record of %s (has %v)", l.Name, w, recs))
			}
		}
	}
	return errors.Join(errs...)
}

// InfraAddrs returns the sorted host:port of the UP infra.discovery
// records the legacy node holds in its env and zone (their http:// addrs).
func (l *LegacyNode) InfraAddrs() ([]string, error) {
	return infraAddrs(l.Client, l.Opts.Env, l.Opts.Zone)
}

// LegacyAddrList returns the HTTP host:port of each node.
func LegacyAddrList(nodes ...*LegacyNode) []string {
	out := make([]string, 0, len(nodes))
	for _, l := range nodes {
		out = append(out, l.HTTP)
	}
	return out
}

// LegacyAddrs is LegacyAddrList comma-joined: the value of
// DISCOVERY_CLUSTER_LEGACY_NODES for a node of ours beside them.
func LegacyAddrs(nodes ...*LegacyNode) string { return strings.Join(LegacyAddrList(nodes...), ",") }

// Running reports whether the process has not exited yet.
func (l *LegacyNode) Running() bool {
	select {
	case <-l.proc.Done():
		return false
	default:
		return true
	}
}

// Done is closed when the process has exited.
func (l *LegacyNode) Done() <-chan struct{} { return l.proc.Done() }

// PID is the process id.
func (l *LegacyNode) PID() int { return l.proc.PID() }

// Started is when the process was started.
func (l *LegacyNode) Started() time.Time { return l.started }

// Logs returns what the process logged so far.
func (l *LegacyNode) Logs() string {
	b, _ := os.ReadFile(l.LogPath)
	return string(b)
}

// Kill sends SIGKILL and waits for the exit: nothing is cancelled on its
// peers, in-flight forwards are cut.
func (l *LegacyNode) Kill(tb testing.TB) {
	tb.Helper()
	_ = l.proc.Signal(syscall.SIGKILL)
	_ = l.proc.Wait(tb, defaultStopTimeout)
}

// Stop sends SIGTERM (the original's graceful stop: its own record is
// cancelled on its peers, held polls answered), waits for the exit and
// fails the test unless it exited with status 0.
func (l *LegacyNode) Stop(tb testing.TB) {
	tb.Helper()
	if err := l.proc.Signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("harness: legacy %s: SIGTERM: %v", l.Name, err)
	}
	if err := l.proc.Wait(tb, defaultStopTimeout); err != nil {
		tb.Errorf("harness: legacy %s: graceful stop: %v (want exit status 0)", l.Name, err)
	}
}

// Restart starts the node again at the same address and hostname, with
// the options edited by edit (may be nil; e.g. Nodes = nil for a node that
// comes back empty and knows no peer). A node still running is stopped
// gracefully first.
func (l *LegacyNode) Restart(tb testing.TB, edit func(*LegacyOptions)) *LegacyNode {
	tb.Helper()
	if l.Running() {
		l.Stop(tb)
	}
	o := l.Opts
	o.Addr = l.HTTP
	o.Nodes = slices.Clone(o.Nodes)
	if edit != nil {
		edit(&o)
	}
	nl, err := startLegacy(tb, LegacyBinary(tb), o)
	if err != nil {
		tb.Fatalf("harness: restart: %v", err)
	}
	return nl
}
