package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/test/harness"
)

const (
	testVersion = "v9.9.9-test"
	testCommit  = "c0ffee"
)

func TestMain(m *testing.M) { harness.Main(m) }

// bin is the discovery binary, built once (by the harness) with the version
// and commit the build-info checks look for.
func bin(t testing.TB) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	flags := []string{"-ldflags", "-X main.version=" + testVersion + " -X main.commit=" + testCommit}
	if raceEnabled {
		flags = append(flags, "-race")
	}
	return harness.BuildPackage(t, root, "./cmd/discovery", "discovery", flags...)
}

// baseEnv is the test process environment without DISCOVERY_* variables, so
// a developer's shell cannot change what the binary sees.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DISCOVERY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

type result struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary to completion (bounded by a deadline).
func runBin(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

func (r result) want(t testing.TB, code int, stdoutHas, stderrHas []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdoutHas {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	runBin(t, baseEnv(), "version").want(t, 0,
		[]string{"version: " + testVersion, "commit: " + testCommit, "go: " + runtime.Version()}, nil)
	runBin(t, baseEnv(), "version", "extra").want(t, 2, nil, []string{"extra"})
}

// keygen prints a fresh 32-byte secret that the configuration accepts.
func TestKeygen(t *testing.T) {
	a := runBin(t, baseEnv(), "keygen")
	a.want(t, 0, nil, nil)
	b := runBin(t, baseEnv(), "keygen")
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.stdout))
	if err != nil || len(k) != 32 || a.stdout == b.stdout {
		t.Fatalf("keygen: %q then %q (%v)", a.stdout, b.stdout, err)
	}
	runBin(t, baseEnv("DISCOVERY_CLUSTER_SECRET="+strings.TrimSpace(a.stdout)), "config").want(t, 0, []string{"secret: <redacted>"}, nil)
}

// Secure by default (issue #11): a node that would take peers on a
// network address without a secret exits at once, saying how to make one;
// cluster.insecure starts it with a loud warning.
func TestServe_RefusesPeersWithoutSecret(t *testing.T) {
	env := baseEnv("DISCOVERY_HTTP_ADDR=127.0.0.1:0", "DISCOVERY_CLUSTER_BIND=127.0.0.1:0",
		"DISCOVERY_CLUSTER_JOIN=192.0.2.1:7946", "DISCOVERY_CLUSTER_JOIN_TIMEOUT=1s")
	runBin(t, env).want(t, 1, nil, []string{"cluster.secret", "discovery keygen"})
	n := harness.StartNode(t, harness.Options{Binary: bin(t), Hostname: "insecure", ExtraEnv: map[string]string{
		"DISCOVERY_CLUSTER_SECRET":       "",
		"DISCOVERY_CLUSTER_INSECURE":     "true",
		"DISCOVERY_CLUSTER_JOIN":         "192.0.2.1:7946",
		"DISCOVERY_CLUSTER_JOIN_TIMEOUT": "1s",
	}})
	if !strings.Contains(n.Logs(), "INSECURE") {
		t.Errorf("no loud warning in the log:\n%s", n.Logs())
	}
	m, err := n.Client.Metrics(t.Context())
	if err != nil || !strings.Contains(m, "discovery_security_insecure 1") {
		t.Errorf("insecure gauge: %v\n%s", err, m)
	}
}

func TestConfig_PrintsEffectiveConfiguration(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("node:\n  zone: from-file\n  region: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runBin(t, baseEnv(
		"DISCOVERY_NODE_ZONE=sh001",
		"DISCOVERY_CLUSTER_JOIN=n1:7946,n2:7946",
		"DISCOVERY_CLUSTER_SECRET=MDEyMzQ1Njc4OWFiY2RlZg==",
		"DISCOVERY_NODES=127.0.0.1:7171", // kratos' variable: ignored
	), "config", "--config", file, "--http.poll_hold=20s")
	r.want(t, 0, []string{
		"zone: sh001",       // env over file
		"region: from-file", // file over embedded default
		"poll_hold: 20s",    // flag
		"n1:7946", "n2:7946",
		"secret: <redacted>",
		"# Listen address", // comments of the embedded file
	}, nil)
	if strings.Contains(r.stdout, "MDEyMzQ1Njc4OWFiY2RlZg==") {
		t.Fatal("secret printed")
	}
	// The output is itself a valid configuration file.
	back := filepath.Join(t.TempDir(), "back.yaml")
	if err := os.WriteFile(back, []byte(strings.Replace(r.stdout, "<redacted>", `""`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	runBin(t, baseEnv(), "config", "--config", back).want(t, 0, []string{"zone: sh001", "poll_hold: 20s"}, nil)
}

func TestConfig_Errors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("http:\n  adr: :1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	cases := []struct {
		name string
		env  []string
		args []string
		has  []string
	}{
		{"unknown env", []string{"DISCOVERY_HTTP_ADR=:1"}, nil, []string{"DISCOVERY_HTTP_ADR"}},
		{"bad env value", []string{"DISCOVERY_HTTP_MAX_POLLERS=lots"}, nil, []string{"DISCOVERY_HTTP_MAX_POLLERS", "http.max_pollers"}},
		{"invalid value", []string{"DISCOVERY_REGISTRY_EVICT_AFTER=0s"}, nil, []string{"registry.evict_after"}},
		{"unknown key in file", nil, []string{"--config", bad}, []string{"http.adr"}},
		{"missing file", nil, []string{"--config", missing}, []string{missing}},
		{"unknown flag", nil, []string{"--http.adr=:1"}, []string{"http.adr"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, sub := range []string{"config", "serve"} {
				runBin(t, baseEnv(tc.env...), append([]string{sub}, tc.args...)...).want(t, 2, nil, tc.has)
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	runBin(t, baseEnv(), "frobnicate").want(t, 2, nil, []string{`unknown command "frobnicate"`, "serve", "health"})
	runBin(t, baseEnv(), "help").want(t, 0, []string{"config", "version", "health"}, nil)
	runBin(t, baseEnv(), "--help").want(t, 0, nil, []string{"--http.addr", "--addr-file", "DISCOVERY_HTTP_ADDR"})
	runBin(t, baseEnv(), "health", "--help").want(t, 0, nil, []string{"--addr", "--timeout"})
}

// startNode runs `discovery serve` as a process on ephemeral ports (the
// harness' node: address file, log, cleanup), in kratos' default env and
// zone, and waits until it is ready.
func startNode(t *testing.T, env map[string]string) *harness.Node {
	t.Helper()
	return harness.StartNode(t, harness.Options{Binary: bin(t), Hostname: "test-node", Env: "dev", Zone: "zone01", Region: "region01", ExtraEnv: env})
}

func TestServe_ReadyHealthMetricsAndSignalShutdown(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			n := startNode(t, nil)
			for _, a := range []string{n.HTTP, n.Gossip} {
				if _, _, err := net.SplitHostPort(a); err != nil || strings.HasSuffix(a, ":0") {
					t.Fatalf("addr file: http %s gossip %s", n.HTTP, n.Gossip)
				}
			}
			// The node registered itself (spec 7.5.1) with its advertised address.
			ii, _, err := n.Client.Fetch(t.Context(), "dev", wire.InfraAppID, 1, "")
			if err != nil {
				t.Fatal(err)
			}
			recs := ii.All()
			if len(recs) != 1 || recs[0].Hostname != "test-node" || len(recs[0].Addrs) != 1 || recs[0].Addrs[0] != "http://"+n.HTTP {
				t.Fatalf("infra.discovery records = %+v", recs)
			}

			runBin(t, baseEnv(), "health", "--addr", n.HTTP).want(t, 0, []string{"ready"}, nil)
			// Without --addr the port comes from the configured http.addr.
			_, port, _ := net.SplitHostPort(n.HTTP)
			runBin(t, baseEnv("DISCOVERY_HTTP_ADDR=:"+port), "health").want(t, 0, []string{"127.0.0.1:" + port}, nil)

			body, err := n.Client.Metrics(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			build := fmt.Sprintf(`discovery_build_info{commit=%q,goversion=%q,version=%q} 1`, testCommit, runtime.Version(), testVersion)
			for _, s := range []string{build, "go_goroutines", "process_open_fds", "discovery_http_parked_polls"} {
				if !strings.Contains(body, s) {
					t.Errorf("/metrics lacks %q", s)
				}
			}
			if log := n.Logs(); !strings.Contains(log, "msg=listening") || !strings.Contains(log, "advertise="+n.HTTP) || !strings.Contains(log, "gossip="+n.Gossip) {
				t.Errorf("no listening log line with the advertised address:\n%s", log)
			}

			if code := n.Signal(t, sig); code != 0 {
				t.Fatalf("exit code %d after %v\n%s", code, sig, n.Logs())
			}
			if !strings.Contains(n.Logs(), "shutdown complete") {
				t.Errorf("no shutdown log:\n%s", n.Logs())
			}
			// The node is gone: health fails.
			runBin(t, baseEnv(), "health", "--addr", n.HTTP, "--timeout", "1s").want(t, 1, nil, []string{n.HTTP})
		})
	}
}

func TestHealth_Failures(t *testing.T) {
	// A port that was just free: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	runBin(t, baseEnv(), "health", "--addr", addr).want(t, 1, nil, []string{addr})

	// A server that answers 503 (not ready).
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	runBin(t, baseEnv(), "health", "--addr", ln.Addr().String()).want(t, 1, nil, []string{"503"})

	// No port to derive the address from.
	runBin(t, baseEnv("DISCOVERY_HTTP_ADDR=127.0.0.1:0"), "health").want(t, 2, nil, []string{"--addr"})
}

func TestServe_ListenErrorExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := runBin(t, baseEnv("DISCOVERY_HTTP_ADDR="+ln.Addr().String(), "DISCOVERY_CLUSTER_BIND=127.0.0.1:0"), "serve")
	r.want(t, 1, nil, []string{"http listen", ln.Addr().String()})
}

func TestWriteAddrFile_Atomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	if err := writeAddrFile(p, listenAddrs{HTTP: "127.0.0.1:1", Gossip: "127.0.0.1:2", HTTPListen: "0.0.0.0:1", GossipBind: "0.0.0.0:3"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(data)) != `{"http":"127.0.0.1:1","gossip":"127.0.0.1:2","http_listen":"0.0.0.0:1","gossip_bind":"0.0.0.0:3"}` {
		t.Fatalf("content %q", data)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := writeAddrFile(filepath.Join(dir, "no-such-dir", "a.json"), listenAddrs{}); err == nil {
		t.Fatal("want an error for a missing directory")
	}
}

func TestLocalAddr(t *testing.T) {
	for in, want := range map[string]string{
		":7171":          "127.0.0.1:7171",
		"0.0.0.0:7171":   "127.0.0.1:7171",
		"[::]:7171":      "127.0.0.1:7171",
		"10.1.2.3:7171":  "10.1.2.3:7171",
		"localhost:8080": "localhost:8080",
	} {
		got, err := localAddr(in)
		if err != nil || got != want {
			t.Errorf("localAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"127.0.0.1:0", "nonsense"} {
		if _, err := localAddr(in); err == nil {
			t.Errorf("localAddr(%q): want an error", in)
		}
	}
}
