//go:build containers

package containers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// nodeNames are the discovery services of deploy/compose.yaml.
var nodeNames = []string{"node1", "node2", "node3"}

// Values compose.yaml gives every node (its defaults, not overridden here).
const (
	testEnv  = "dev"
	testZone = "zone01"
)

// cluster is one compose project of deploy/compose.yaml plus the suite's
// override (testdata/compose.test.yaml), with its own project name, subnet
// and host ports, so runs and tests never clash.
type cluster struct {
	t       *testing.T
	project string
	prefix  string         // first three octets of the /24
	ports   map[string]int // node -> published HTTP port on 127.0.0.1
	ids     map[string]string
	extra   []func() // cleanups that must run before `down` (edge networks)

	mu   sync.Mutex
	apis map[string]*apiClient
}

// startCluster brings a cluster up and waits until all three nodes are
// healthy. `down -v` is registered before `up`, so a failed start is torn
// down too, and on failure every node's log is printed first.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{
		t:       t,
		project: projectName(t),
		ports:   map[string]int{},
		ids:     map[string]string{},
		apis:    map[string]*apiClient{},
	}
	for _, n := range nodeNames {
		c.ports[n] = freePort(t)
	}
	t.Cleanup(c.teardown)

	start := time.Now()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		c.prefix = freeSubnetPrefix(t)
		out, err := c.compose(3*time.Minute, "up", "-d")
		if err == nil {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("%w\n%s", err, out)
		portTaken := bytes.Contains(out, []byte("address already in use")) || bytes.Contains(out, []byte("port is already allocated"))
		if !bytes.Contains(out, []byte("overlap")) && !portTaken {
			break
		}
		// Another network took the subnet, or another process one of the
		// ports, since we picked them: clean up, pick again.
		_, _ = c.compose(2*time.Minute, "down", "-v", "--remove-orphans")
		if portTaken {
			for _, n := range nodeNames {
				c.ports[n] = freePort(t)
			}
		}
	}
	if lastErr != nil {
		t.Fatalf("compose up: %v", lastErr)
	}
	for _, n := range nodeNames {
		c.waitHealthy(n, start, 90*time.Second)
	}
	t.Logf("cluster %s (subnet %s.0/24, ports %v) healthy after %s", c.project, c.prefix, c.ports, time.Since(start).Round(100*time.Millisecond))
	return c
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

func projectName(t *testing.T) string {
	name := nonName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "")
	if len(name) > 20 {
		name = name[:20]
	}
	return "ct" + suite.runID + name
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeSubnetPrefix picks a random 172.29.X.0/24 that overlaps no Docker
// network and no address of this host.
func freeSubnetPrefix(t *testing.T) string {
	t.Helper()
	var used []netip.Prefix
	out, err := command(t.Context(), time.Minute, nil, "sh", "-c",
		`docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' $(docker network ls -q)`)
	if err != nil {
		t.Fatalf("list docker networks: %v\n%s", err, out)
	}
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			used = append(used, p)
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				used = append(used, p.Masked())
			}
		}
	}
	for range 200 {
		prefix := fmt.Sprintf("172.29.%d", rand.IntN(256))
		cand := netip.MustParsePrefix(prefix + ".0/24")
		free := true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return prefix
		}
	}
	t.Fatal("no free /24 in 172.29.0.0/16")
	return ""
}

// The cluster secret and admin token of every test cluster, passed as an
// operator does (make cluster-up exports fresh ones).
const (
	clusterSecret = "Y29udGFpbmVyLXN1aXRlLXNlY3JldC0zMi1ieXRlcyE="
	adminToken    = "container-suite-admin-token"
)

// env is what compose interpolates deploy/compose.yaml with.
func (c *cluster) env() []string {
	return []string{
		"DISCOVERY_IMAGE=" + suite.image,
		"DISCO_NET_PREFIX=" + c.prefix,
		"DISCO_PUBLISH_IP=127.0.0.1",
		"DISCO_NODE1_PORT=" + strconv.Itoa(c.ports["node1"]),
		"DISCO_NODE2_PORT=" + strconv.Itoa(c.ports["node2"]),
		"DISCO_NODE3_PORT=" + strconv.Itoa(c.ports["node3"]),
		"DISCO_ENV=" + testEnv,
		"DISCO_ZONE=" + testZone,
		"DISCOVERY_CLUSTER_SECRET=" + clusterSecret,
		"DISCOVERY_ADMIN_TOKEN=" + adminToken,
		// Never start the observability profile (its images would be pulled).
		"COMPOSE_PROFILES=",
	}
}

// compose runs the compose command on this project.
func (c *cluster) compose(timeout time.Duration, args ...string) ([]byte, error) {
	full := append([]string(nil), suite.compose[1:]...)
	full = append(full,
		"-p", c.project,
		"-f", filepath.Join(suite.root, "deploy", "compose.yaml"),
		"-f", filepath.Join(suite.root, "test", "containers", "testdata", "compose.test.yaml"),
	)
	full = append(full, args...)
	return command(context.Background(), timeout, c.env(), suite.compose[0], full...)
}

func (c *cluster) teardown() {
	c.mu.Lock()
	for _, a := range c.apis {
		a.close()
	}
	c.mu.Unlock()
	if c.t.Failed() {
		c.dumpLogs()
	}
	for i := len(c.extra) - 1; i >= 0; i-- {
		c.extra[i]()
	}
	if out, err := c.compose(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
		c.t.Errorf("compose down: %v\n%s", err, out)
	}
}

func (c *cluster) dumpLogs() {
	out, err := c.compose(time.Minute, "logs", "--no-color", "--timestamps", "--tail", "400")
	if err != nil {
		c.t.Logf("compose logs: %v", err)
	}
	c.t.Logf("===== compose logs of %s =====\n%s\n===== end of logs =====", c.project, out)
}

// network is the compose network of the nodes.
func (c *cluster) network() string { return c.project + "_discovery" }

// ip is the node's static address on the network (compose.yaml: .11-.13).
func (c *cluster) ip(node string) string {
	return fmt.Sprintf("%s.%d", c.prefix, 10+nodeIndex(node))
}

// httpAddr is the node's advertised HTTP address (what clients and
// infra.discovery see).
func (c *cluster) httpAddr(node string) string { return c.ip(node) + ":7171" }

func nodeIndex(node string) int {
	for i, n := range nodeNames {
		if n == node {
			return i + 1
		}
	}
	panic("unknown node " + node)
}

// container returns the node's container id (stable across kill/start).
func (c *cluster) container(node string) string {
	c.t.Helper()
	if id := c.ids[node]; id != "" {
		return id
	}
	out, err := c.compose(time.Minute, "ps", "-q", node)
	id := strings.TrimSpace(string(out))
	if err != nil || id == "" || strings.ContainsAny(id, " \n") {
		c.t.Fatalf("container of %s: %v %q", node, err, out)
	}
	c.ids[node] = id
	return id
}

func (c *cluster) docker(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := command(context.Background(), timeout, nil, "docker", args...)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// healthState is the container's state and its last health check.
type healthState struct {
	Running   bool
	Status    string    // starting, healthy, unhealthy; "" without a healthcheck
	LastCheck time.Time // start of the most recent check
	Detail    string
}

func (c *cluster) health(node string) healthState {
	c.t.Helper()
	out := c.docker(time.Minute, "inspect", "--format", "{{json .State}}", c.container(node))
	var st struct {
		Running bool
		Status  string
		Health  *struct {
			Status string
			Log    []struct {
				Start    time.Time
				ExitCode int
				Output   string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("inspect %s: %v: %s", node, err, out)
	}
	h := healthState{Running: st.Running, Detail: st.Status}
	if st.Health != nil {
		h.Status = st.Health.Status
		if n := len(st.Health.Log); n > 0 {
			last := st.Health.Log[n-1]
			h.LastCheck = last.Start
			h.Detail = fmt.Sprintf("%s, last check exit %d: %s", st.Status, last.ExitCode, strings.TrimSpace(last.Output))
		}
	}
	return h
}

// waitHealthy waits until Docker reports the node healthy by a check that
// ran after since (a status carried over from before a restart does not
// count).
func (c *cluster) waitHealthy(node string, since time.Time, timeout time.Duration) time.Duration {
	c.t.Helper()
	return testkit.Poll(c.t, timeout, 250*time.Millisecond, node+" healthy", func() error {
		h := c.health(node)
		return testkit.State(h.Running && h.Status == "healthy" && h.LastCheck.After(since), fmt.Sprintf("%s (%s)", h.Status, h.Detail))
	})
}

func (c *cluster) kill(node string)  { c.t.Helper(); c.docker(time.Minute, "kill", c.container(node)) }
func (c *cluster) start(node string) { c.t.Helper(); c.docker(time.Minute, "start", c.container(node)) }

// stop stops the node gracefully (SIGTERM, then SIGKILL after 30 s).
func (c *cluster) stop(node string) {
	c.t.Helper()
	c.docker(2*time.Minute, "stop", "-t", "30", c.container(node))
}

// partition cuts node off the cluster network. The host keeps reaching its
// published port through a private "edge" network (no aliases, so the node
// cannot resolve or reach its peers over it). heal undoes it, restoring the
// node's static address and service alias.
func (c *cluster) partition(node string) (heal func()) {
	c.t.Helper()
	edge := c.project + "-edge-" + node
	c.docker(time.Minute, "network", "create", edge)
	removed := false
	c.extra = append(c.extra, func() {
		if !removed {
			_, _ = command(context.Background(), time.Minute, nil, "docker", "network", "disconnect", "-f", edge, c.container(node))
			_, _ = command(context.Background(), time.Minute, nil, "docker", "network", "rm", edge)
		}
	})
	c.docker(time.Minute, "network", "connect", edge, c.container(node))
	c.docker(time.Minute, "network", "disconnect", c.network(), c.container(node))
	return func() {
		c.t.Helper()
		c.docker(time.Minute, "network", "connect", "--ip", c.ip(node), "--alias", node, c.network(), c.container(node))
		c.docker(time.Minute, "network", "disconnect", edge, c.container(node))
		c.docker(time.Minute, "network", "rm", edge)
		removed = true
	}
}

// api returns an HTTP client of node through its published port.
// One client per node, shared (it is safe for concurrent use); teardown
// closes their idle connections.
func (c *cluster) api(node string) *apiClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.apis[node]; a != nil {
		return a
	}
	a := newAPIClient(fmt.Sprintf("http://127.0.0.1:%d", c.ports[node]))
	c.apis[node] = a
	return a
}
