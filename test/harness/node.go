package harness

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Defaults of Options. Zone, env and region are deliberately not kratos'
// defaults (zone01, dev, region01), so a server that ignores them shows.
// Every node gets DefaultSecret as its cluster secret (DISCOVERY_CLUSTER_SECRET)
// unless ExtraEnv sets another (or "" for none).
const (
	DefaultSecret = "aGFybmVzcy1jbHVzdGVyLXNlY3JldC0zMi1ieXRlcyE="
	DefaultZone   = "sh001"
	DefaultEnv    = "e2e"
	DefaultRegion = "sh"

	defaultReadyTimeout = 45 * time.Second
	defaultStopTimeout  = 30 * time.Second
)

// Options describe one node process.
type Options struct {
	// Hostname is DISCOVERY_NODE_HOSTNAME (the infra.discovery record's
	// hostname). Empty: a unique "nodeN".
	Hostname string
	// Zone, Env, Region: DISCOVERY_NODE_ZONE, _ENV, _REGION. Empty: the
	// Default* constants.
	Zone, Env, Region string
	// HTTPAddr, GossipAddr are the listen addresses. Empty: 127.0.0.1:0.
	HTTPAddr, GossipAddr string
	// Join lists gossip seeds (host:port). StartCluster and Cluster.Add
	// fill it with live nodes when empty.
	Join []string
	// Env adds or overrides environment variables of the node, e.g.
	// DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL=2s.
	ExtraEnv map[string]string
	// Args are extra command-line arguments.
	Args []string
	// Faults routes the node's peer traffic through the cluster's Fabric so
	// Isolate/Partition can cut it. Only meaningful inside a Cluster.
	Faults bool
	// NoWaitReady returns as soon as the node reported its listeners,
	// without waiting for /readyz.
	NoWaitReady bool
	// ReadyTimeout bounds the wait for the address file and /readyz.
	// Zero: 45 s.
	ReadyTimeout time.Duration
	// Binary is the server binary to run. Empty: BuildBinary's.
	Binary string
}

func (o Options) withDefaults() Options {
	identityDefaults(&o.Hostname, &o.Zone, &o.Env, &o.Region, "node", &nodeSeq)
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.GossipAddr == "" {
		o.GossipAddr = "127.0.0.1:0"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	o.ExtraEnv = maps.Clone(o.ExtraEnv)
	o.Join = slices.Clone(o.Join)
	o.Args = slices.Clone(o.Args)
	return o
}

// nodeSeq numbers default hostnames uniquely within the test binary.
var nodeSeq atomic.Int64

// Node is one running (or finished) discovery process. Its address fields
// never change; Restart returns a new Node.
type Node struct {
	// Name is the node's hostname (DISCOVERY_NODE_HOSTNAME).
	Name string
	// Opts are the options it was started with (defaults applied).
	Opts Options
	// HTTP is the node's own HTTP listener, dialable from the test; it
	// bypasses the fault proxies, so a cut-off node stays reachable here.
	HTTP string
	// Gossip is the node's own gossip listener.
	Gossip string
	// AdvertisedHTTP and AdvertisedGossip are what peers and clients use:
	// the fault proxies when Opts.Faults, else HTTP and Gossip.
	AdvertisedHTTP, AdvertisedGossip string
	// HTTPS is the advertised HTTPS host:port (DISCOVERY_HTTP_TLS_ADDR
	// set), else empty.
	HTTPS string
	// LogPath holds the process's stdout and stderr.
	LogPath string
	// Client talks to HTTP.
	Client *Client

	tb       testing.TB
	cmd      *exec.Cmd
	ep       *endpoint // nil without Faults
	done     chan struct{}
	exitErr  error // valid after done
	started  time.Time
	stopping atomic.Bool
}

// addrFile is what the binary writes to --addr-file once it listens: the
// advertised addresses and the bound ones.
type addrFile struct {
	HTTP       string `json:"http"`
	Gossip     string `json:"gossip"`
	HTTPListen string `json:"http_listen"`
	GossipBind string `json:"gossip_bind"`
	HTTPS      string `json:"https"`
}

// StartNode starts one node (standalone, or joining opts.Join) and waits
// until it is ready. The process is killed when the test ends, and its log
// is printed if the test failed.
func StartNode(tb testing.TB, opts Options) *Node {
	tb.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = BuildBinary(tb)
	}
	n, err := startNode(tb, bin, opts, nil)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return n
}

// startNode returns an error rather than failing, so several nodes can be
// started from goroutines. fab is nil unless opts.Faults.
func startNode(tb testing.TB, bin string, opts Options, fab *Fabric) (*Node, error) {
	opts = opts.withDefaults()
	if opts.Faults && fab == nil {
		return nil, errors.New("Options.Faults needs a Cluster (its Fabric)")
	}
	var ep *endpoint
	if opts.Faults {
		var err error
		if ep, err = fab.addEndpoint(opts.Hostname); err != nil {
			return nil, fmt.Errorf("node %s: fault proxies: %w", opts.Hostname, err)
		}
	}
	return startOnce(tb, bin, opts, ep)
}

func startOnce(tb testing.TB, bin string, opts Options, ep *endpoint) (*Node, error) {
	dir := tb.TempDir()
	n := &Node{
		Name:    opts.Hostname,
		Opts:    opts,
		LogPath: filepath.Join(dir, "node.log"),
		tb:      tb,
		ep:      ep,
		done:    make(chan struct{}),
	}
	addrPath := filepath.Join(dir, "addr.json")

	env := map[string]string{
		"DISCOVERY_HTTP_ADDR":      opts.HTTPAddr,
		"DISCOVERY_CLUSTER_BIND":   opts.GossipAddr,
		"DISCOVERY_CLUSTER_JOIN":   strings.Join(opts.Join, ","),
		"DISCOVERY_NODE_HOSTNAME":  opts.Hostname,
		"DISCOVERY_NODE_ZONE":      opts.Zone,
		"DISCOVERY_NODE_ENV":       opts.Env,
		"DISCOVERY_NODE_REGION":    opts.Region,
		"DISCOVERY_LOG_LEVEL":      "debug",
		"DISCOVERY_CLUSTER_SECRET": DefaultSecret,
	}
	if ep != nil {
		// Peers must only ever learn the proxy addresses; the node binds
		// its own listeners (port 0) and reports them in its address file.
		n.AdvertisedHTTP = ep.http.addr()
		n.AdvertisedGossip = ep.gossip.addr()
		env["DISCOVERY_HTTP_ADVERTISE"] = n.AdvertisedHTTP
		env["DISCOVERY_CLUSTER_ADVERTISE"] = n.AdvertisedGossip
	}
	maps.Copy(env, opts.ExtraEnv)

	logf, err := os.Create(n.LogPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--addr-file", addrPath}, opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = mergeEnv(os.Environ(), env, "DISCOVERY_")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childSysProcAttr()
	n.cmd = cmd
	n.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("node %s: start: %w", n.Name, err)
	}
	if ep != nil {
		ep.setPID(cmd.Process.Pid)
	}
	go func() {
		n.exitErr = cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	// Registered after TempDir, so it runs before the directory is removed.
	tb.Cleanup(n.cleanup)

	deadline := time.Now().Add(opts.ReadyTimeout)
	af, err := n.waitAddrFile(addrPath, deadline)
	if err != nil {
		return n, err
	}
	if ep != nil {
		if af.HTTP != n.AdvertisedHTTP || af.Gossip != n.AdvertisedGossip {
			return n, fmt.Errorf("node %s advertises %s, %s instead of its proxies %s, %s",
				n.Name, af.HTTP, af.Gossip, n.AdvertisedHTTP, n.AdvertisedGossip)
		}
		h, err1 := dialable(af.HTTPListen)
		g, err2 := dialable(af.GossipBind)
		if err := errors.Join(err1, err2); err != nil {
			return n, fmt.Errorf("node %s: address file %+v: %w", n.Name, af, err)
		}
		ep.setUpstreams(cmd.Process.Pid, h, g)
		n.HTTP, n.Gossip = h.String(), g.String()
	} else {
		// The file holds the advertised addresses. When the node listens on
		// all interfaces, the test dials loopback at the same port rather
		// than the advertised (non-loopback) host.
		h, err1 := reachable(opts.HTTPAddr, af.HTTP)
		g, err2 := reachable(opts.GossipAddr, af.Gossip)
		if err := errors.Join(err1, err2); err != nil {
			return n, fmt.Errorf("node %s: address file %+v: %w", n.Name, af, err)
		}
		n.HTTP, n.Gossip = h.String(), g.String()
		n.AdvertisedHTTP, n.AdvertisedGossip = af.HTTP, af.Gossip
	}
	n.HTTPS = af.HTTPS
	n.Client = NewClient(n.HTTP)
	if opts.NoWaitReady {
		return n, nil
	}
	return n, n.waitReady(deadline)
}

func (n *Node) waitAddrFile(path string, deadline time.Time) (addrFile, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var af addrFile
			if err = json.Unmarshal(b, &af); err == nil && af.HTTP != "" && af.Gossip != "" && af.HTTPListen != "" && af.GossipBind != "" {
				return af, nil
			}
			if err == nil {
				err = fmt.Errorf("incomplete: %s", b)
			}
		}
		last = err
		select {
		case <-n.done:
			return addrFile{}, fmt.Errorf("node %s exited before writing its address file (%w)", n.Name, n.exitErr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return addrFile{}, fmt.Errorf("node %s: no address file within %s: %w", n.Name, n.Opts.ReadyTimeout, last)
		}
	}
}

// waitReady polls /readyz until 200.
func (n *Node) waitReady(deadline time.Time) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		ok, err := n.Client.Ready(ctx)
		cancel()
		if ok {
			return nil
		}
		if err == nil {
			err = errors.New("/readyz not 200")
		}
		last = err
		select {
		case <-n.done:
			return fmt.Errorf("node %s exited before it was ready (%w)", n.Name, n.exitErr)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: not ready within %s: %w", n.Name, n.Opts.ReadyTimeout, last)
		}
	}
}

// WaitReady waits (bounded by timeout) until /readyz answers 200 and
// returns how long that took from the process start.
func (n *Node) WaitReady(tb testing.TB, timeout time.Duration) time.Duration {
	tb.Helper()
	if err := n.waitReady(time.Now().Add(timeout)); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return time.Since(n.started)
}

// Started is when the process was started.
func (n *Node) Started() time.Time { return n.started }

// PID is the process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (n *Node) Running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Done is closed when the process has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

// Kill sends SIGKILL and waits for the process to exit.
func (n *Node) Kill(tb testing.TB) {
	tb.Helper()
	n.stopping.Store(true)
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.done:
	case <-time.After(defaultStopTimeout):
		tb.Fatalf("harness: node %s did not die after SIGKILL", n.Name)
	}
}

// Stop sends SIGTERM (graceful shutdown), waits for the exit and fails the
// test unless the process exited with status 0.
func (n *Node) Stop(tb testing.TB) {
	tb.Helper()
	n.stopping.Store(true)
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("harness: node %s: SIGTERM: %v", n.Name, err)
	}
	select {
	case <-n.done:
	case <-time.After(defaultStopTimeout):
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
		tb.Fatalf("harness: node %s: no exit within %s of SIGTERM", n.Name, defaultStopTimeout)
	}
	if n.exitErr != nil {
		tb.Errorf("harness: node %s: graceful stop: %v (want exit status 0)", n.Name, n.exitErr)
	}
}

// Signal sends sig, waits for the exit and returns the exit status (-1
// when killed by a signal).
func (n *Node) Signal(tb testing.TB, sig os.Signal) int {
	tb.Helper()
	n.stopping.Store(true)
	if err := n.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("harness: node %s: %v: %v", n.Name, sig, err)
	}
	select {
	case <-n.done:
	case <-time.After(defaultStopTimeout):
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
		tb.Fatalf("harness: node %s: no exit within %s of %v", n.Name, defaultStopTimeout, sig)
	}
	return n.cmd.ProcessState.ExitCode()
}

// ExitErr is the process's exit error (nil for status 0); only valid once
// Done is closed.
func (n *Node) ExitErr() error {
	<-n.done
	return n.exitErr
}

// Logs returns what the process wrote so far.
func (n *Node) Logs() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// cleanup kills a node still running, and prints its log if the test
// failed or the node died on its own.
func (n *Node) cleanup() {
	unexpected := false
	select {
	case <-n.done:
		unexpected = !n.stopping.Load()
	default:
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
	}
	if n.Client != nil {
		n.Client.Close()
	}
	if dir := os.Getenv(EnvLogDir); dir != "" {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(n.tb.Name()) + "-" + n.Name + "-" + fmt.Sprint(n.cmd.Process.Pid) + ".log"
		if b, err := os.ReadFile(n.LogPath); err == nil {
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	if n.tb.Failed() || unexpected || os.Getenv(EnvLogs) == "1" {
		n.tb.Logf("==== node %s (pid %d, http %s, exit %v) log ====\n%s==== end of node %s log ====",
			n.Name, n.cmd.Process.Pid, n.HTTP, n.exitErr, tail(n.Logs(), 256<<10), n.Name)
	}
}

func tail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return "[... " + fmt.Sprint(len(s)-max) + " bytes cut ...]\n" + s[len(s)-max:]
}

// reachable returns where the test dials a node that listens on listen and
// advertises advertised: the advertised address, unless the node listens on
// every interface, then loopback at the advertised port.
func reachable(listen, advertised string) (netip.AddrPort, error) {
	ap, err := dialable(advertised)
	if err != nil {
		return ap, err
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return ap, err
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if err == nil && ip.Is6() {
			lo = netip.IPv6Loopback()
		}
		return netip.AddrPortFrom(lo, ap.Port()), nil
	}
	return ap, nil
}

// dialable turns a listen address into one the test can dial: an
// unspecified host (0.0.0.0, ::) becomes loopback.
func dialable(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ap.Addr().IsUnspecified() {
		if ap.Addr().Is4() {
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port())
		} else {
			ap = netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port())
		}
	}
	return ap, nil
}

// mergeEnv overrides base (KEY=VALUE list) with set and drops inherited
// variables starting with drop (nodes get no DISCOVERY_* from the developer's
// shell: their configuration is exactly what the test asked for).
func mergeEnv(base []string, set map[string]string, drop string) []string {
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok && (drop == "" || !strings.HasPrefix(k, drop)) {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}

// identityDefaults fills an empty hostname (prefix + a number of seq), zone,
// env and region of a node's options.
func identityDefaults(hostname, zone, env, region *string, prefix string, seq *atomic.Int64) {
	if *hostname == "" {
		*hostname = fmt.Sprintf("%s%d", prefix, seq.Add(1))
	}
	*zone = cmp.Or(*zone, DefaultZone)
	*env = cmp.Or(*env, DefaultEnv)
	*region = cmp.Or(*region, DefaultRegion)
}
