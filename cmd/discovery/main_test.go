package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/discovery-go/discovery/internal/testkit"
)

// binPath is the discovery binary built once by TestMain.
var binPath string

const (
	testVersion = "v9.9.9-test"
	testCommit  = "c0ffee"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "discovery-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "discovery")
	args := []string{"build", "-o", binPath, "-ldflags", "-X main.version=" + testVersion + " -X main.commit=" + testCommit}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(testkit.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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
	cmd := exec.CommandContext(ctx, binPath, args...)
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

// node is a running `discovery serve` subprocess.
type node struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, after done
	HTTP   string
	Gossip string
	// Bound addresses (differ from HTTP/Gossip when advertise is set).
	HTTPListen, GossipBind string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode starts `discovery serve` on ephemeral ports and waits for its
// --addr-file. The node is killed at cleanup if the test left it running.
func startNode(t *testing.T, env ...string) *node {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addrs.json")
	cmd := exec.Command(binPath, "serve", "--addr-file", addrFile)
	cmd.Env = baseEnv(append([]string{
		"DISCOVERY_HTTP_ADDR=127.0.0.1:0",
		"DISCOVERY_CLUSTER_BIND=127.0.0.1:0",
		"DISCOVERY_NODE_HOSTNAME=test-node",
		"DISCOVERY_LOG_LEVEL=debug",
	}, env...)...)
	n := &node{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = n.stderr, n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		select {
		case <-n.done:
		default:
			_ = cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("node log:\n%s", n.stderr.String())
		}
	})

	var addrs listenAddrs
	testkit.Eventually(t, 30*time.Second, "the --addr-file", func() error {
		select {
		case <-n.done:
			t.Fatalf("node exited early: %v\n%s", n.err, n.stderr.String())
		default:
		}
		data, err := os.ReadFile(addrFile)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		if err := json.Unmarshal(data, &addrs); err != nil {
			t.Fatalf("addr file %q: %v", data, err)
		}
		return testkit.State(true, "")
	})
	n.HTTP, n.Gossip = addrs.HTTP, addrs.Gossip
	n.HTTPListen, n.GossipBind = addrs.HTTPListen, addrs.GossipBind
	return n
}

// stop sends sig and returns the exit code.
func (n *node) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("node did not exit after %v\n%s", sig, n.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(n.err, &ee) {
		return ee.ExitCode()
	}
	if n.err != nil {
		t.Fatal(n.err)
	}
	return 0
}

// client never keeps idle connections (goleak, and nodes that exit).
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 40 * time.Second}

func get(t testing.TB, u string) (int, string) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, n *node) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "/readyz 200", func() error {
		code, body := get(t, "http://"+n.HTTP+"/readyz")
		return testkit.State(code == http.StatusOK, fmt.Sprintf("%d %s", code, body))
	})
}

func TestServe_ReadyHealthMetricsAndSignalShutdown(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			n := startNode(t)
			for _, a := range []string{n.HTTP, n.Gossip} {
				if _, _, err := net.SplitHostPort(a); err != nil || strings.HasSuffix(a, ":0") {
					t.Fatalf("addr file = %+v", n)
				}
			}
			waitReady(t, n)
			// The node registered itself (spec 7.5.1) with its advertised address.
			recs := selfRecords(t, n)
			if len(recs) != 1 || recs[0].Hostname != "test-node" || len(recs[0].Addrs) != 1 || recs[0].Addrs[0] != "http://"+n.HTTP {
				t.Fatalf("infra.discovery records = %+v", recs)
			}

			runBin(t, baseEnv(), "health", "--addr", n.HTTP).want(t, 0, []string{"ready"}, nil)
			// Without --addr the port comes from the configured http.addr.
			_, port, _ := net.SplitHostPort(n.HTTP)
			runBin(t, baseEnv("DISCOVERY_HTTP_ADDR=:"+port), "health").want(t, 0, []string{"127.0.0.1:" + port}, nil)

			code, body := get(t, "http://"+n.HTTP+"/metrics")
			if code != http.StatusOK {
				t.Fatalf("/metrics: %d", code)
			}
			build := fmt.Sprintf(`discovery_build_info{commit=%q,goversion=%q,version=%q} 1`, testCommit, runtime.Version(), testVersion)
			for _, s := range []string{build, "go_goroutines", "process_open_fds", "discovery_http_parked_polls"} {
				if !strings.Contains(body, s) {
					t.Errorf("/metrics lacks %q", s)
				}
			}
			if log := n.stderr.String(); !strings.Contains(log, "msg=listening") || !strings.Contains(log, "advertise="+n.HTTP) || !strings.Contains(log, "gossip="+n.Gossip) {
				t.Errorf("no listening log line with the advertised address:\n%s", n.stderr.String())
			}

			if code := n.stop(t, sig); code != 0 {
				t.Fatalf("exit code %d after %v\n%s", code, sig, n.stderr.String())
			}
			if !strings.Contains(n.stderr.String(), "shutdown complete") {
				t.Errorf("no shutdown log:\n%s", n.stderr.String())
			}
			// The node is gone: health fails.
			runBin(t, baseEnv(), "health", "--addr", n.HTTP, "--timeout", "1s").want(t, 1, nil, []string{n.HTTP})
		})
	}
}

type selfRecord struct {
	Hostname string   `json:"hostname"`
	Addrs    []string `json:"addrs"`
}

// selfRecords fetches the infra.discovery records of env dev from n.
func selfRecords(t *testing.T, n *node) []selfRecord {
	t.Helper()
	code, body := get(t, "http://"+n.HTTP+"/discovery/fetch?env=dev&appid=infra.discovery&status=1")
	if code != http.StatusOK {
		t.Fatalf("fetch infra.discovery: %d %s", code, body)
	}
	var ans struct {
		Code int `json:"code"`
		Data struct {
			Instances map[string][]selfRecord `json:"instances"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil || ans.Code != 0 {
		t.Fatalf("fetch infra.discovery: %v %s", err, body)
	}
	var out []selfRecord
	for _, recs := range ans.Data.Instances {
		out = append(out, recs...)
	}
	return out
}

func hostnames(recs []selfRecord) string {
	var hs []string
	for _, r := range recs {
		hs = append(hs, r.Hostname)
	}
	return strings.Join(hs, ",")
}

// startPair starts node-a, then node-b joined to it (bEnv added to b's
// environment), both ready, with a's record on b.
func startPair(t *testing.T, bEnv ...string) (a, b *node) {
	t.Helper()
	a = startNode(t, "DISCOVERY_NODE_HOSTNAME=node-a")
	waitReady(t, a)
	b = startNode(t, append([]string{"DISCOVERY_NODE_HOSTNAME=node-b", "DISCOVERY_CLUSTER_JOIN=" + a.Gossip}, bEnv...)...)
	waitReady(t, b)
	testkit.Eventually(t, 30*time.Second, "a in b's records", func() error {
		h := hostnames(selfRecords(t, b))
		return testkit.State(strings.Contains(h, "node-a"), h)
	})
	return a, b
}

// TestServe_AdvertiseWithPortZeroBinds: cluster.advertise is what the node
// publishes even when cluster.bind asks for port 0 (memberlist used to
// replace the advertised gossip port with the bound one), and --addr-file
// reports the advertised and the bound addresses. A peer joining through
// the bound gossip address learns and dials the advertised one.
func TestServe_AdvertiseWithPortZeroBinds(t *testing.T) {
	// A port certainly different from the one gossip binds: we hold it.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	adv := held.Addr().String()
	a := startNode(t, "DISCOVERY_NODE_HOSTNAME=node-a", "DISCOVERY_CLUSTER_ADVERTISE="+adv)
	if a.Gossip != adv {
		t.Fatalf("addr file advertises gossip %s, want %s", a.Gossip, adv)
	}
	if h, p, err := net.SplitHostPort(a.GossipBind); err != nil || h != "127.0.0.1" || p == "0" || a.GossipBind == adv {
		t.Fatalf("addr file gossip_bind %q, want 127.0.0.1:<bound port>", a.GossipBind)
	}
	if a.HTTPListen != a.HTTP { // no http.advertise: the bound address is advertised
		t.Fatalf("addr file http_listen %q, http %q", a.HTTPListen, a.HTTP)
	}
	if log := a.stderr.String(); !strings.Contains(log, "gossip="+adv) {
		t.Errorf("no log line with the advertised gossip address %s:\n%s", adv, log)
	}
	waitReady(t, a)

	// b reaches a's bound gossip port and learns a's advertised address: its
	// failure detector dials it (UDP finds nobody there, then the TCP
	// fallback ping reaches the port we hold). Before the fix b only ever
	// dialled the bound port.
	b := startNode(t, "DISCOVERY_NODE_HOSTNAME=node-b", "DISCOVERY_CLUSTER_JOIN="+a.GossipBind)
	testkit.Eventually(t, 30*time.Second, "a in b's /discovery/nodes", func() error {
		_, body := get(t, "http://"+b.HTTP+"/discovery/nodes")
		return testkit.State(strings.Contains(body, `"addr":"`+a.HTTP+`"`), body)
	})
	gl := held.(*net.TCPListener)
	if err := gl.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := gl.Accept()
	if err != nil {
		t.Fatalf("nobody dialled a's advertised gossip address %s: %v", adv, err)
	}
	conn.Close()
}

// TestServe_TwoNodes_GracefulLeaveCancelsOwnRecord: a node that joins a
// seed appears in the seed's node list and infra.discovery records; on
// SIGTERM it cancels its record (replicated) before leaving, so the seed
// drops it at once instead of after eviction (spec 7.5.3).
func TestServe_TwoNodes_GracefulLeaveCancelsOwnRecord(t *testing.T) {
	a, b := startPair(t)

	testkit.Eventually(t, 30*time.Second, "both records on both nodes", func() error {
		ha, hb := hostnames(selfRecords(t, a)), hostnames(selfRecords(t, b))
		both := func(h string) bool { return strings.Contains(h, "node-a") && strings.Contains(h, "node-b") }
		return testkit.State(both(ha) && both(hb), "a: "+ha+" b: "+hb)
	})
	testkit.Eventually(t, 30*time.Second, "b in a's /discovery/nodes", func() error {
		_, body := get(t, "http://"+a.HTTP+"/discovery/nodes")
		return testkit.State(strings.Contains(body, `"addr":"`+b.HTTP+`"`) && strings.Contains(body, `"addr":"`+a.HTTP+`"`), body)
	})

	if code := b.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("b exit code %d\n%s", code, b.stderr.String())
	}
	testkit.Eventually(t, 10*time.Second, "b's record gone from a", func() error {
		h := hostnames(selfRecords(t, a))
		return testkit.State(h == "node-a", h)
	})
	// Removed by b's replicated cancel, not by a's crash handling.
	if strings.Contains(a.stderr.String(), "failed without leaving") {
		t.Fatalf("a treated b's graceful leave as a failure:\n%s", a.stderr.String())
	}
	if code := a.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("a exit code %d\n%s", code, a.stderr.String())
	}
}

// TestServe_ShutdownBoundedWhenPeerGone: the peer that should take our
// cancel has crashed; the drain is cut at the shutdown budget and the node
// still exits 0 on SIGTERM.
func TestServe_ShutdownBoundedWhenPeerGone(t *testing.T) {
	a, b := startPair(t, "DISCOVERY_HTTP_SHUTDOWN_TIMEOUT=2s")
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	start := time.Now()
	if code := b.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("b exit code %d\n%s", code, b.stderr.String())
	}
	// Generous margin over the 2 s budget: this checks the bound exists,
	// not the speed.
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("shutdown took %v with a 2s budget", took)
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

// TestServe_ShutdownAnswersParkedPolls: a long-poll held by the node is
// answered at once on SIGTERM (not after the 30 s hold), and the node exits 0.
func TestServe_ShutdownAnswersParkedPolls(t *testing.T) {
	n := startNode(t)
	waitReady(t, n)
	base := "http://" + n.HTTP
	form := url.Values{
		"region": {"r1"}, "zone": {"zone01"}, "env": {"dev"}, "appid": {"demo.svc"},
		"hostname": {"h1"}, "addrs": {"grpc://127.0.0.1:9000"}, "status": {"1"},
	}
	resp, err := client.PostForm(base+"/discovery/register", form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"code":0`) {
		t.Fatalf("register: %s", b)
	}

	// First poll answers at once with the app's latest_timestamp.
	pollURL := func(latest int64) string {
		return fmt.Sprintf("%s/discovery/poll?env=dev&appid=demo.svc&hostname=poller&latest_timestamp=%d", base, latest)
	}
	_, body := get(t, pollURL(0))
	var first struct {
		Code int `json:"code"`
		Data struct {
			LatestTimestamp int64 `json:"latest_timestamp"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &first); err != nil || first.Code != 0 || first.Data.LatestTimestamp == 0 {
		t.Fatalf("first poll: %v %s", err, body)
	}

	// The second poll is up to date: the node parks it.
	type answer struct {
		body string
		took time.Duration
	}
	answered := make(chan answer, 1)
	go func() {
		start := time.Now()
		_, body := get(t, pollURL(first.Data.LatestTimestamp))
		answered <- answer{body, time.Since(start)}
	}()
	testkit.Eventually(t, 10*time.Second, "the poll to be parked", func() error {
		_, m := get(t, base+"/metrics")
		return testkit.State(strings.Contains(m, "discovery_http_parked_polls 1"), "not parked")
	})

	if code := n.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d\n%s", code, n.stderr.String())
	}
	select {
	case a := <-answered:
		if !strings.Contains(a.body, `"code":-304`) {
			t.Fatalf("parked poll answered %q, want -304", a.body)
		}
		if a.took >= 25*time.Second {
			t.Fatalf("parked poll held %v: not woken by the shutdown", a.took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("parked poll not answered")
	}
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

// TestServe_GracefulStopDeliversAckedWrites: a node stopping on SIGTERM
// replicates every write it acknowledged. Clients keep registering on it
// while it stops; once it has exited, its peer holds every instance the
// stopping node answered code 0 for (spec 7.2.2: the answer precedes the
// forward, so the forward must still happen).
func TestServe_GracefulStopDeliversAckedWrites(t *testing.T) {
	a, b := startPair(t)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h := fmt.Sprintf("w%d-%d", w, i)
				form := url.Values{
					"zone": {"zone01"}, "env": {"dev"}, "appid": {"demo.stop"},
					"hostname": {h}, "addrs": {"grpc://127.0.0.1:9000"}, "status": {"1"},
				}
				resp, err := client.PostForm("http://"+b.HTTP+"/discovery/register", form)
				if err != nil {
					return // b no longer takes connections
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), `"code":0`) {
					mu.Lock()
					acked = append(acked, h)
					mu.Unlock()
				}
			}
		}()
	}
	testkit.Eventually(t, 30*time.Second, "writes flowing", func() error {
		mu.Lock()
		defer mu.Unlock()
		return testkit.State(len(acked) >= 50, fmt.Sprint(len(acked)))
	})
	if code := b.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("b exit code %d\n%s", code, b.stderr.String())
	}
	close(stop)
	wg.Wait()

	code, body := get(t, "http://"+a.HTTP+"/discovery/fetch?env=dev&appid=demo.stop&status=3")
	if code != http.StatusOK {
		t.Fatalf("fetch: %d %s", code, body)
	}
	var ans struct {
		Data struct {
			Instances map[string][]selfRecord `json:"instances"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, recs := range ans.Data.Instances {
		for _, r := range recs {
			have[r.Hostname] = true
		}
	}
	var lost []string
	for _, h := range acked {
		if !have[h] {
			lost = append(lost, h)
		}
	}
	t.Logf("%d writes acknowledged by the stopping node", len(acked))
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged writes never reached the peer: %v", len(lost), len(acked), lost[:min(len(lost), 10)])
	}
}
