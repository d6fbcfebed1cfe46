package sdk

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

// TestSDK_HTTPS: nodes with an HTTPS listener beside the plain one (issue
// #11). The SDK, trusting the cluster's CA from a file, registers and
// watches over HTTPS, learns every node's https:// address from
// infra.discovery, and its gRPC resolver follows; a kratos-style plain
// client on the HTTP port sees the same registry; a client that does not
// trust the CA gets nowhere; a renewed certificate is served without a
// restart and a broken one leaves the previous one in use.
func TestSDK_HTTPS(t *testing.T) {
	ca := harness.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	ca.Issue(t, certFile, keyFile, 1, "127.0.0.1")
	c := harness.StartCluster(t, 2, harness.Options{ExtraEnv: map[string]string{
		"DISCOVERY_HTTP_TLS_ADDR":      "127.0.0.1:0",
		"DISCOVERY_HTTP_TLS_CERT_FILE": certFile,
		"DISCOVERY_HTTP_TLS_KEY_FILE":  keyFile,
	}})
	n1, n2 := c.Node(0), c.Node(1)
	if n1.HTTPS == "" || n2.HTTPS == "" {
		t.Fatalf("no HTTPS addresses: %q %q", n1.HTTPS, n2.HTTPS)
	}
	// Each node publishes both addresses; kratos keeps the http one.
	ii, _, err := n1.Client.Fetch(t.Context(), harness.DefaultEnv, wire.InfraAppID, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ii.All() {
		if len(in.Addrs) != 2 || !strings.HasPrefix(in.Addrs[0], "http://") || !strings.HasPrefix(in.Addrs[1], "https://") {
			t.Errorf("%s publishes %v, want http:// then https://", in.Hostname, in.Addrs)
		}
	}

	cfg := clientConfig("tls-backend", n1.HTTPS)
	cfg.CAFile = ca.File
	reg := newClient(t, cfg)
	backend := startBackend(t)
	if _, err := reg.Register(t.Context(), client.Instance{AppID: "sdk.tls", Addrs: []string{"grpc://" + backend}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "SDK learns both HTTPS addresses", func() error {
		return want(sortedCopy(reg.Nodes()), sortedCopy([]string{n1.HTTPS, n2.HTTPS}))
	})
	// The plain listener serves the same registry (kratos' view).
	testkit.Eventually(t, 10*time.Second, "registration on the plain port of the other node", func() error {
		ii, _, err := n2.Client.Fetch(t.Context(), harness.DefaultEnv, "sdk.tls", 1, "")
		if err != nil {
			return err
		}
		return want(hostsOf(ii.All()), []string{"tls-backend"})
	})

	callerCfg := clientConfig("tls-caller", n2.HTTPS)
	callerCfg.TLS = ca.ClientConfig()
	conn, err := grpc.NewClient("discovery:///sdk.tls",
		grpc.WithResolvers(resolver.NewBuilder(newClient(t, callerCfg))),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitPeers(t, healthpb.NewHealthClient(conn), 10*time.Second, backend)

	// A client that does not trust the CA (the system roots) fails.
	stranger := clientConfig("stranger", n1.HTTPS)
	stranger.CAFile = harness.NewCA(t).File
	stranger.RetryTimeout = time.Second
	sc := newClient(t, stranger)
	if _, err := sc.Fetch(t.Context(), "sdk.tls"); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("fetch trusting another CA: %v, want ErrUnavailable", err)
	}

	// Renewal: the next handshake gets the new certificate, no restart.
	if s, err := harness.ServedSerial(t, n1.HTTPS, ca.Pool); err != nil || s.Int64() != 1 {
		t.Fatalf("served serial %v (%v), want 1", s, err)
	}
	ca.Issue(t, certFile, keyFile, 2, "127.0.0.1")
	if s, err := harness.ServedSerial(t, n1.HTTPS, ca.Pool); err != nil || s.Int64() != 2 {
		t.Fatalf("after renewal: served serial %v (%v), want 2", s, err)
	}
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := harness.ServedSerial(t, n1.HTTPS, ca.Pool); err != nil || s.Int64() != 2 {
		t.Fatalf("after a broken renewal: served serial %v (%v), want 2 still", s, err)
	}
	m, err := n1.Client.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`discovery_tls_reloads_total{result="ok"} 1`, `discovery_tls_reloads_total{result="error"} 1`} {
		if !strings.Contains(m, line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	if _, err := reg.Fetch(t.Context(), "sdk.tls"); err != nil {
		t.Fatalf("SDK after the renewals: %v", err)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func hostsOf(ins []wire.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}
