// Package deploy_test checks deploy/ without a Docker engine: the compose
// file through the official compose-spec loader, every node's DISCOVERY_*
// environment through the server's own configuration loader, and the
// Prometheus files through promtool. It is a separate module so compose-go's
// dependencies stay out of the main go.mod.
package deploy_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/discovery-go/discovery/configs"
)

const (
	deployDir   = "../../deploy"
	composeFile = "compose.yaml"
	httpPort    = 7171
	gossipPort  = 7946
)

// composeSecret stands for the DISCOVERY_CLUSTER_SECRET the operator (or
// make cluster-up) exports; compose refuses to run without one.
const composeSecret = "Y29tcG9zZS10ZXN0LXNlY3JldC0zMi1ieXRlcy0hISE="

// loadProject loads deploy/compose.yaml the way `docker compose` does:
// interpolation from env (with composeSecret unless env sets one), then
// deploy/.env; normalisation; profiles.
func loadProject(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "DISCOVERY_CLUSTER_SECRET=") }) {
		env = append(slices.Clone(env), "DISCOVERY_CLUSTER_SECRET="+composeSecret)
	}
	p, err := tryLoadProject(t, env, profiles...)
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func tryLoadProject(t *testing.T, env []string, profiles ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(deployDir, composeFile)},
		cli.WithWorkingDirectory(deployDir),
		cli.WithName("discovery"),
		cli.WithEnv(env),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return opts.LoadProject(ctx)
}

// Every node gets the cluster secret and the admin token from the shell;
// without a secret compose itself refuses, saying how to make one (a node
// without one would refuse to start with seeds anyway).
func TestCompose_CarriesSecret(t *testing.T) {
	const token = "compose-test-admin-token"
	p := loadProject(t, []string{"DISCOVERY_ADMIN_TOKEN=" + token})
	for _, n := range discoveryNodes(t, p, dotEnv(t)["DISCOVERY_IMAGE"]) {
		cfg := loadNodeConfig(t, n)
		if cfg.Cluster.Secret != composeSecret || cfg.Security.AdminToken != token {
			t.Errorf("%s: secret %q token %q, want the shell's", n.Name, cfg.Cluster.Secret, cfg.Security.AdminToken)
		}
	}
	if _, err := tryLoadProject(t, []string{"DISCOVERY_CLUSTER_SECRET="}); err == nil || !strings.Contains(err.Error(), "discovery keygen") {
		t.Fatalf("compose without a secret: %v, want a refusal naming discovery keygen", err)
	}
}

// dotEnv reads deploy/.env (KEY=VALUE lines) for expected defaults.
func dotEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf(".env: line without '=': %q", line)
		}
		m[k] = v
	}
	return m
}

// discoveryNodes returns the services running the discovery image, by name.
func discoveryNodes(t *testing.T, p *types.Project, image string) []types.ServiceConfig {
	t.Helper()
	var nodes []types.ServiceConfig
	for _, s := range p.Services {
		if s.Image == image {
			nodes = append(nodes, s)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	return nodes
}

func envOf(s types.ServiceConfig) map[string]string {
	m := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			m[k] = *v
		}
	}
	return m
}

func environ(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func TestCompose_DefaultProject(t *testing.T) {
	p := loadProject(t, nil)
	image := dotEnv(t)["DISCOVERY_IMAGE"]
	if image == "" {
		t.Fatal(".env sets no DISCOVERY_IMAGE")
	}
	nodes := discoveryNodes(t, p, image)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"node1", "node2", "node3"}) {
		t.Fatalf("discovery services = %v, want node1..node3 (image %s)", names, image)
	}
	// Without the profile only the nodes run: tests and `make cluster-up`
	// never need Prometheus or Grafana images.
	if got := p.ServiceNames(); len(got) != 3 {
		t.Errorf("services active without a profile = %v, want only the three nodes", got)
	}
	checkNodes(t, p, nodes, "127.0.0.1", []string{"7171", "7172", "7173"})
}

// TestCompose_Interpolation loads the file with the variables the container
// suite sets (other subnet, ephemeral host ports, own image tag) and checks
// that every address follows.
func TestCompose_Interpolation(t *testing.T) {
	env := []string{
		"DISCOVERY_IMAGE=discovery:ct-1234",
		"DISCO_NET_PREFIX=10.99.7",
		"DISCO_NODE1_PORT=40001", "DISCO_NODE2_PORT=40002", "DISCO_NODE3_PORT=40003",
		"DISCO_ENV=test", "DISCO_ZONE=z9",
	}
	p := loadProject(t, env)
	nodes := discoveryNodes(t, p, "discovery:ct-1234")
	if len(nodes) != 3 {
		t.Fatalf("%d services use DISCOVERY_IMAGE=discovery:ct-1234, want 3", len(nodes))
	}
	checkNodes(t, p, nodes, "127.0.0.1", []string{"40001", "40002", "40003"})
	for _, n := range nodes {
		if !strings.HasPrefix(n.Networks["discovery"].Ipv4Address, "10.99.7.") {
			t.Errorf("%s: address %s does not follow DISCO_NET_PREFIX", n.Name, n.Networks["discovery"].Ipv4Address)
		}
		cfg := loadNodeConfig(t, n)
		if cfg.Node.Env != "test" || cfg.Node.Zone != "z9" {
			t.Errorf("%s: node env/zone = %s/%s, want test/z9", n.Name, cfg.Node.Env, cfg.Node.Zone)
		}
	}
}

// checkNodes asserts the rules every deployment of the three nodes must keep.
func checkNodes(t *testing.T, p *types.Project, nodes []types.ServiceConfig, publishIP string, hostPorts []string) {
	t.Helper()
	net := p.Networks["discovery"]
	if len(net.Ipam.Config) != 1 {
		t.Fatalf("network discovery: want one IPAM pool, got %+v", net.Ipam.Config)
	}
	subnet, err := netip.ParsePrefix(net.Ipam.Config[0].Subnet)
	if err != nil {
		t.Fatalf("network discovery: subnet: %v", err)
	}
	ipRange, err := netip.ParsePrefix(net.Ipam.Config[0].IPRange)
	if err != nil {
		t.Fatalf("network discovery: ip_range: %v", err)
	}

	serviceNames := map[string]bool{}
	for _, s := range p.Services {
		serviceNames[s.Name] = true
	}
	published := map[string]string{} // host port -> service
	hostnames := map[string]string{}
	var joinLists []string
	for i, n := range nodes {
		t.Run(n.Name, func(t *testing.T) {
			// Healthcheck: exec form through the binary (no shell in the image).
			hc := n.HealthCheck
			if hc == nil || hc.Disable {
				t.Fatal("no healthcheck")
			}
			if want := []string{"CMD", "/discovery", "health"}; !slices.Equal(hc.Test, want) {
				t.Errorf("healthcheck test = %q, want %q", hc.Test, want)
			}
			if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil || hc.StartPeriod == nil {
				t.Errorf("healthcheck must set interval, timeout, retries and start_period: %+v", hc)
			} else if time.Duration(*hc.Timeout) >= time.Duration(*hc.Interval) {
				t.Errorf("healthcheck timeout %s must be below interval %s", time.Duration(*hc.Timeout), time.Duration(*hc.Interval))
			}
			if n.Restart == "" || n.Restart == "no" {
				t.Errorf("restart policy = %q, want one that restarts", n.Restart)
			}
			// No ulimits (issue #15): a fixed nofile above the engine's
			// own limit fails the documented command on such engines.
			if len(n.Ulimits) != 0 {
				t.Errorf("ulimits %v: the nodes must inherit the engine's limit", n.Ulimits)
			}
			// Nodes start alone and join whoever is up: no ordering.
			for dep := range n.DependsOn {
				t.Errorf("depends_on %s: nodes must not depend on each other", dep)
			}

			// Exactly one published port: the HTTP API.
			if len(n.Ports) != 1 {
				t.Fatalf("ports = %+v, want exactly the HTTP port", n.Ports)
			}
			port := n.Ports[0]
			if port.Target != httpPort || port.Protocol != "tcp" {
				t.Errorf("published target %d/%s, want %d/tcp (gossip stays unpublished)", port.Target, port.Protocol, httpPort)
			}
			if port.HostIP != publishIP {
				t.Errorf("published on %q, want %q", port.HostIP, publishIP)
			}
			if port.Published != hostPorts[i] {
				t.Errorf("host port %s, want %s", port.Published, hostPorts[i])
			}

			// Advertised addresses: the node's static address on the network.
			nc := n.Networks["discovery"]
			if nc == nil || nc.Ipv4Address == "" {
				t.Fatalf("no static ipv4_address on network discovery: %+v", n.Networks)
			}
			ip, err := netip.ParseAddr(nc.Ipv4Address)
			if err != nil {
				t.Fatalf("ipv4_address: %v", err)
			}
			if !subnet.Contains(ip) || ipRange.Contains(ip) {
				t.Errorf("address %s must be in subnet %s and outside the dynamic ip_range %s", ip, subnet, ipRange)
			}
			env := envOf(n)
			if want := netip.AddrPortFrom(ip, gossipPort).String(); env["DISCOVERY_CLUSTER_ADVERTISE"] != want {
				t.Errorf("DISCOVERY_CLUSTER_ADVERTISE = %q, want %q (an IP literal, memberlist requires one)", env["DISCOVERY_CLUSTER_ADVERTISE"], want)
			}
			if want := netip.AddrPortFrom(ip, httpPort).String(); env["DISCOVERY_HTTP_ADVERTISE"] != want {
				t.Errorf("DISCOVERY_HTTP_ADVERTISE = %q, want %q", env["DISCOVERY_HTTP_ADVERTISE"], want)
			}

			// Join seeds: existing services on the gossip port.
			join := env["DISCOVERY_CLUSTER_JOIN"]
			joinLists = append(joinLists, join)
			seeds := strings.Split(join, ",")
			if len(seeds) != len(nodes) {
				t.Errorf("join %q: want all %d nodes as seeds", join, len(nodes))
			}
			for _, seed := range seeds {
				host, port, err := splitHostPort(seed)
				if err != nil {
					t.Errorf("join seed %q: %v", seed, err)
					continue
				}
				if !serviceNames[host] {
					t.Errorf("join seed %q names no service of the project", seed)
				}
				if port != gossipPort {
					t.Errorf("join seed %q: port %d, want gossip port %d", seed, port, gossipPort)
				}
			}

			// The server accepts the whole environment, and it means what
			// compose says.
			cfg := loadNodeConfig(t, n)
			if !slices.Equal(cfg.Cluster.Join, seeds) {
				t.Errorf("loaded cluster.join = %q, want %q", cfg.Cluster.Join, seeds)
			}
			if cfg.HTTP.Advertise != env["DISCOVERY_HTTP_ADVERTISE"] || cfg.Cluster.Advertise != env["DISCOVERY_CLUSTER_ADVERTISE"] {
				t.Errorf("loaded advertise http=%q cluster=%q, want the compose values", cfg.HTTP.Advertise, cfg.Cluster.Advertise)
			}
			if _, p, _ := splitHostPort(cfg.Cluster.Bind); p != gossipPort {
				t.Errorf("cluster.bind %q: the seeds use port %d", cfg.Cluster.Bind, gossipPort)
			}
			if _, p, _ := splitHostPort(cfg.HTTP.Addr); p != httpPort {
				t.Errorf("http.addr %q: the published port targets %d", cfg.HTTP.Addr, httpPort)
			}
			if cfg.Node.Hostname != n.Hostname {
				t.Errorf("node.hostname %q differs from the container hostname %q", cfg.Node.Hostname, n.Hostname)
			}
			if other, dup := hostnames[cfg.Node.Hostname]; dup {
				t.Errorf("node.hostname %q also used by %s", cfg.Node.Hostname, other)
			}
			hostnames[cfg.Node.Hostname] = n.Name
		})
	}
	for _, s := range p.Services {
		for _, port := range s.Ports {
			if other, dup := published[port.Published]; dup {
				t.Errorf("host port %s published by %s and %s", port.Published, other, s.Name)
			}
			published[port.Published] = s.Name
		}
	}
	for _, j := range joinLists[1:] {
		if j != joinLists[0] {
			t.Errorf("join lists differ (%q vs %q): every node must get the same seeds", j, joinLists[0])
		}
	}
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}

// loadNodeConfig runs the server's own loader on the service's environment,
// exactly as the binary does at start (no flags). A renamed or misspelled
// DISCOVERY_* key fails here.
func loadNodeConfig(t *testing.T, s types.ServiceConfig) configs.Config {
	t.Helper()
	env := environ(envOf(s))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DISCOVERY_") {
			t.Errorf("%s: environment %q is not a discovery setting", s.Name, kv)
		}
	}
	cfg, err := configs.Load(nil, env)
	if err != nil {
		t.Fatalf("%s: configs.Load rejects the compose environment: %v", s.Name, err)
	}
	return cfg
}

// TestCompose_RenamedKeyFails proves the environment check can fail: the
// same loader rejects a node environment with one key misspelled.
func TestCompose_RenamedKeyFails(t *testing.T) {
	p := loadProject(t, nil)
	n := discoveryNodes(t, p, dotEnv(t)["DISCOVERY_IMAGE"])[0]
	env := envOf(n)
	env["DISCOVERY_CLUSTER_JOINS"] = env["DISCOVERY_CLUSTER_JOIN"]
	delete(env, "DISCOVERY_CLUSTER_JOIN")
	if _, err := configs.Load(nil, environ(env)); err == nil {
		t.Fatal("configs.Load accepted DISCOVERY_CLUSTER_JOINS; the compose check would not catch a renamed key")
	}
}

func TestCompose_ObservabilityProfile(t *testing.T) {
	p := loadProject(t, nil, "observability")
	for _, name := range []string{"prometheus", "grafana"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("profile observability has no service %s", name)
		}
		repo, tag, ok := strings.Cut(s.Image, ":")
		if !ok || tag == "" || tag == "latest" || !strings.ContainsAny(tag, "0123456789") {
			t.Errorf("%s: image %q must be pinned to a version tag", name, s.Image)
		}
		_ = repo
		if !slices.Contains(s.Profiles, "observability") {
			t.Errorf("%s: profiles = %v, want observability (tests never start it)", name, s.Profiles)
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind mount source: %v", name, err)
			}
		}
	}
	prom := p.Services["prometheus"]
	for _, n := range []string{"node1", "node2", "node3"} {
		if d, ok := prom.DependsOn[n]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("prometheus must wait for %s to be healthy, depends_on = %+v", n, prom.DependsOn)
		}
	}
	mounted := map[string]string{}
	for _, v := range prom.Volumes {
		mounted[v.Target] = v.Source
	}
	for target, file := range map[string]string{
		"/etc/prometheus/prometheus.yml": "prometheus.yml",
		"/etc/prometheus/alerts.yml":     "alerts.yml",
	} {
		want, _ := filepath.Abs(filepath.Join(deployDir, file))
		if mounted[target] != want {
			t.Errorf("prometheus: %s mounted from %q, want %q", target, mounted[target], want)
		}
	}
}
