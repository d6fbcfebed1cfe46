package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of testdata/ctl")

const ctlToken = "ctl-test-admin-token-0123"

// ctlNode is a real node (a process) with an admin token and a few
// instances registered through the public API.
func ctlNode(t *testing.T) *harness.Node {
	t.Helper()
	n := startNode(t, map[string]string{"DISCOVERY_SECURITY_ADMIN_TOKEN": ctlToken})
	for _, in := range []harness.Instance{
		{Region: "region01", Zone: "zone01", Env: "dev", AppID: "demo.checkout", Hostname: "checkout-0", Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Version: "v1.4.2", Status: 1, Metadata: map[string]string{"weight": "10"}},
		{Region: "region01", Zone: "zone01", Env: "dev", AppID: "demo.checkout", Hostname: "checkout-1", Addrs: []string{"grpc://10.0.0.2:9000"}, Version: "v1.4.2", Status: 2},
		{Region: "region01", Zone: "zone01", Env: "dev", AppID: "demo.cart", Hostname: "cart-0", Addrs: []string{"grpc://10.0.1.1:9000"}, Status: 1},
	} {
		if env, err := n.Client.Register(t.Context(), in); err != nil || env.Code != 0 {
			t.Fatalf("register %s: %v %+v", in.Hostname, err, env)
		}
	}
	return n
}

func ctlEnv(n *harness.Node, extra ...string) []string {
	return baseEnv(append([]string{"DISCOVERY_NODES=" + n.HTTP}, extra...)...)
}

// normalize replaces what changes from run to run (addresses, ages,
// random name suffixes) so the table output can be compared as golden.
func normalize(s string, n *harness.Node) string {
	s = strings.ReplaceAll(s, n.HTTP, "NODE")
	s = regexp.MustCompile(`\b\d+(d\d+h|h\d+m|m\d+s|s) ago\b`).ReplaceAllString(s, "AGE ago")
	s = regexp.MustCompile(`\b(test-node)-[0-9a-f]{8}\b`).ReplaceAllString(s, "$1-ID")
	// Column widths follow the values replaced above: compare the cells.
	return regexp.MustCompile(` {2,}`).ReplaceAllString(s, "  ")
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", "ctl", name+".golden")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (run with -update to accept):\n--- got\n%s\n--- want\n%s", name, p, got, want)
	}
}

// Every subcommand end to end against a real node: tables compared with
// golden files, JSON parsed back, exit codes.
func TestCtl_Commands(t *testing.T) {
	n := ctlNode(t)
	env := ctlEnv(n, "DISCOVERY_ADMIN_TOKEN="+ctlToken)

	r := runBin(t, env, "ctl", "apps")
	r.want(t, 0, nil, nil)
	golden(t, "apps", normalize(r.stdout, n))

	r = runBin(t, env, "ctl", "instances", "demo.checkout")
	r.want(t, 0, nil, nil)
	golden(t, "instances", normalize(r.stdout, n))

	r = runBin(t, env, "ctl", "nodes")
	r.want(t, 0, nil, nil)
	golden(t, "nodes", normalize(r.stdout, n))

	// JSON output parses back into the wire types.
	r = runBin(t, env, "ctl", "apps", "-o", "json")
	r.want(t, 0, nil, nil)
	var page wire.AppsPage
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || page.Total != 3 {
		t.Fatalf("apps -o json: %v %+v", err, page)
	}
	r = runBin(t, env, "ctl", "instances", "demo.checkout", "--json")
	var list []wire.Instance
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 2 || len(list[0].Addrs) != 2 {
		t.Fatalf("instances --json: %v %+v", err, list)
	}
	r = runBin(t, env, "ctl", "status", "-o", "json")
	r.want(t, 0, nil, nil)
	var st wire.AdminStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Node.Hostname != "test-node" || !st.Node.Ready || st.Registry.Instances["dev"] != 4 {
		t.Fatalf("status -o json: %v %+v", err, st)
	}
	r = runBin(t, env, "ctl", "status")
	r.want(t, 0, []string{"Self-preservation", "off:", "MEMBER", "test-node-", "(this node)", "dev: 3 apps, 4 instances"}, nil)

	// set and cancel, replicated like any write.
	r = runBin(t, env, "ctl", "set", "demo.checkout", "checkout-1", "--status", "up", "--metadata", `{"weight":"5"}`)
	r.want(t, 0, nil, nil)
	golden(t, "set", normalize(r.stdout, n))
	ii, _, err := n.Client.Fetch(t.Context(), "dev", "demo.checkout", 1, "")
	if err != nil || len(ii.All()) != 2 || ii.All()[1].Metadata["weight"] != "5" {
		t.Fatalf("after set: %v %+v", err, ii)
	}
	r = runBin(t, env, "ctl", "cancel", "demo.cart", "cart-0")
	r.want(t, 0, nil, nil)
	golden(t, "cancel", normalize(r.stdout, n))
	r = runBin(t, env, "ctl", "health")
	r.want(t, 0, []string{"NODE", "true"}, nil)
}

// Exit codes scripts rely on: not found 3, refused 4, unreachable 5,
// usage 2.
func TestCtl_ExitCodes(t *testing.T) {
	n := ctlNode(t)
	with := ctlEnv(n, "DISCOVERY_ADMIN_TOKEN="+ctlToken)
	runBin(t, with, "ctl", "instances", "no.such.app").want(t, 3, nil, []string{"-404"})
	runBin(t, with, "ctl", "cancel", "demo.checkout", "nobody").want(t, 3, nil, []string{"not found"})
	runBin(t, ctlEnv(n), "ctl", "apps").want(t, 4, nil, []string{"-401", "admin token required"})
	runBin(t, ctlEnv(n, "DISCOVERY_ADMIN_TOKEN=wrong-token-wrong-token"), "ctl", "set", "demo.cart", "cart-0", "--status", "waiting").want(t, 4, nil, []string{"-403"})
	runBin(t, baseEnv("DISCOVERY_NODES=127.0.0.1:1"), "ctl", "nodes", "--timeout", "1s").want(t, 5, nil, []string{"no node answered"})
	runBin(t, with, "ctl", "set", "demo.cart", "cart-0").want(t, 2, nil, []string{"nothing to set"})
	runBin(t, with, "ctl", "set", "demo.cart", "cart-0", "--status", "sleeping").want(t, 2, nil, []string{"--status"})
	runBin(t, with, "ctl", "instances").want(t, 2, nil, []string{"want APPID"})
	runBin(t, with, "ctl", "frobnicate").want(t, 2, nil, []string{"unknown command"})
	runBin(t, with, "ctl").want(t, 2, []string{"Commands:", "watch", "Exit codes"}, nil)
	for _, sub := range []string{"apps", "instances", "nodes", "status", "set", "cancel", "watch", "health"} {
		runBin(t, with, "ctl", sub, "--help").want(t, 0, nil, []string{"Examples:", "discovery ctl " + sub, "Exit codes"})
	}
	// A dead seed first: the live one answers (failover).
	runBin(t, baseEnv("DISCOVERY_NODES=127.0.0.1:1,"+n.HTTP), "ctl", "nodes", "--timeout", "1s").want(t, 0, []string{n.HTTP}, nil)
}

// watch streams the app's list at every change, as JSON lines with
// --json, and exits 0 on an interrupt.
func TestCtl_Watch(t *testing.T) {
	n := ctlNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t), "ctl", "watch", "demo.checkout", "--json")
	cmd.Env = ctlEnv(n)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("watch exited")
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("not JSON: %q", l)
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no line from watch")
		}
		return nil
	}
	if first := next(); len(first["instances"].([]any)) != 1 { // UP ones, as clients see them
		t.Fatalf("first line %v", first)
	}
	in := harness.Instance{Region: "region01", Zone: "zone01", Env: "dev", AppID: "demo.checkout", Hostname: "checkout-9", Addrs: []string{"grpc://10.0.0.9:9000"}, Status: 1}
	if env, err := n.Client.Register(t.Context(), in); err != nil || env.Code != 0 {
		t.Fatal(err, env)
	}
	testkit.EventuallyTrue(t, 20*time.Second, "the new instance in a line", func() bool {
		return len(next()["instances"].([]any)) == 2
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v", err)
	}
}

// --ca-file makes ctl speak HTTPS to the nodes' TLS listener; a node
// whose certificate it does not trust is unreachable (5).
func TestCtl_HTTPS(t *testing.T) {
	ca := harness.NewCA(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	ca.Issue(t, cert, key, 1, "127.0.0.1")
	n := startNode(t, map[string]string{
		"DISCOVERY_HTTP_TLS_ADDR": "127.0.0.1:0", "DISCOVERY_HTTP_TLS_CERT_FILE": cert, "DISCOVERY_HTTP_TLS_KEY_FILE": key,
	})
	in := harness.Instance{Region: "region01", Zone: "zone01", Env: "dev", AppID: "demo.tls", Hostname: "h1", Addrs: []string{"grpc://10.0.0.1:9000"}, Status: 1}
	if env, err := n.Client.Register(t.Context(), in); err != nil || env.Code != 0 {
		t.Fatal(err, env)
	}
	env := baseEnv("DISCOVERY_NODES=" + n.HTTPS)
	runBin(t, env, "ctl", "instances", "demo.tls", "--ca-file", ca.File).want(t, 0, []string{"h1", "grpc://10.0.0.1:9000"}, nil)
	runBin(t, env, "ctl", "instances", "demo.tls", "--ca-file", harness.NewCA(t).File, "--timeout", "2s").want(t, 5, nil, []string{"certificate"})
}
