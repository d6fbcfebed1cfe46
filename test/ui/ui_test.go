// Package ui proves the admin web page (/ui/) in a real headless Chromium
// (Debian's chromium, driven with chromedp) against a 3-node cluster of
// real nodes on loopback: what an operator sees and does in the page.
//
// Screenshots go to $DISCOVERY_ARTIFACTS (default .build/artifacts at the
// repository root); with -update-screenshots the README's copies in
// docs/img are rewritten too.
package ui

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/embed"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/syncup"
	"github.com/discovery-go/discovery/test/harness"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "also write the README screenshots in docs/img")

const (
	secret = "dWktdGVzdC1jbHVzdGVyLXNlY3JldC0zMi1ieXRlcyE="
	token  = "ui-test-admin-token-0123"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// cluster starts n nodes on loopback, joined, each with the admin token.
func cluster(t *testing.T, n int) []*embed.Node {
	t.Helper()
	var nodes []*embed.Node
	for i := range n {
		cfg := configs.DefaultConfig()
		cfg.Node.Hostname = fmt.Sprintf("node%d", i+1)
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.Cluster.Bind = "127.0.0.1:0"
		cfg.Cluster.Secret = secret
		cfg.Cluster.JoinTimeout = 5 * time.Second
		cfg.HTTP.ShutdownTimeout = 5 * time.Second
		cfg.Security.AdminToken = token
		if i > 0 {
			cfg.Cluster.Join = []string{nodes[0].Addrs().Gossip}
		}
		nd, err := embed.New(cfg, embed.Options{Logger: testkit.Logger(t, slog.LevelWarn).With("node", cfg.Node.Hostname), Memberlist: syncup.LocalGossip, Version: "v-ui-test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = nd.Shutdown(ctx)
		})
		nodes = append(nodes, nd)
	}
	testkit.EventuallyTrue(t, 20*time.Second, "cluster formed and ready", func() bool {
		for _, nd := range nodes {
			select {
			case <-nd.Ready():
			default:
				return false
			}
			if len(nd.Cluster().Nodes()) != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// browser is a headless Chromium tab; every console error, uncaught
// exception or error log entry of the page is recorded.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T, width, height int64) *browser {
	t.Helper()
	path := ""
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p2, err := exec.LookPath(p); err == nil {
			path = p2
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: install Debian's package (apt-get install -y chromium); .ci/run does")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(int(width), int(height)),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	// chromedp logs CDP events it has no handler for (newer Chromium
	// sends more than it knows); they are not the page's errors.
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {}))
	b := &browser{ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeWarning {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.record("console." + string(e.Type) + ": " + strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			b.record("exception: " + e.ExceptionDetails.Text + " " + exceptionText(e.ExceptionDetails))
		case *log.EventEntryAdded:
			if e.Entry.Level == log.LevelError {
				b.record("log: " + e.Entry.Text + " " + e.Entry.URL)
			}
		}
	})
	if err := chromedp.Run(ctx, log.Enable(), runtime.Enable(), chromedp.EmulateViewport(width, height)); err != nil {
		cancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	return b
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}

func (b *browser) record(s string) {
	b.mu.Lock()
	b.errors = append(b.errors, s)
	b.mu.Unlock()
}

func (b *browser) noErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(b.errors, "\n"))
	}
}

func (b *browser) run(t *testing.T, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text returns the text of the first node matching sel ("" if none).
func (b *browser) text(sel string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	var s string
	_ = chromedp.Run(ctx, chromedp.Evaluate(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : ""; })()`, sel), &s))
	return s
}

func (b *browser) eval(js string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	var s string
	_ = chromedp.Run(ctx, chromedp.Evaluate(js, &s))
	return s
}

func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("DISCOVERY_ARTIFACTS")
	if dir == "" {
		root, err := harness.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, ".build", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	var png []byte
	b.run(t, "screenshot "+name, chromedp.FullScreenshot(&png, 100))
	p := filepath.Join(artifacts(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	if *updateScreenshots {
		root, _ := harness.ModuleRoot()
		if err := os.WriteFile(filepath.Join(root, "docs", "img", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// signIn opens the page, which asks for the admin token (the node has
// one), and gives it.
func (b *browser) signIn(t *testing.T, base string) {
	t.Helper()
	b.run(t, "open the page and give the token",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(`#token-input`, chromedp.ByQuery),
		chromedp.SendKeys(`#token-input`, token, chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
		chromedp.WaitVisible(`#protect-state`, chromedp.ByQuery),
	)
}

func instance(app, host, addr string) harness.Instance {
	return harness.Instance{Region: "region01", Zone: "zone01", Env: "dev", AppID: app, Hostname: host, Addrs: []string{addr}, Status: 1,
		Metadata: map[string]string{"weight": "10"}}
}

// The page lists an app registered through the public API; a status change
// made from the page reaches every node of the cluster; a registration
// made on another node appears in the open page, without a reload, within
// 1 s; no console error; screenshots of the overview and the app page.
func TestUI_ClusterOperations(t *testing.T) {
	nodes := cluster(t, 3)
	c1 := harness.NewClient(nodes[0].Addrs().HTTP)
	defer c1.Close()
	c2 := harness.NewClient(nodes[1].Addrs().HTTP)
	defer c2.Close()
	for i := range 3 {
		if env, err := c1.Register(t.Context(), instance("demo.checkout", fmt.Sprintf("checkout-%d", i), fmt.Sprintf("grpc://10.0.0.%d:9000", i+1))); err != nil || env.Code != 0 {
			t.Fatalf("register: %v %+v", err, env)
		}
	}
	if env, err := c1.Register(t.Context(), instance("demo.cart", "cart-0", "grpc://10.0.1.1:9000")); err != nil || env.Code != 0 {
		t.Fatalf("register: %v %+v", err, env)
	}
	base := "http://" + nodes[0].Addrs().HTTP
	b := newBrowser(t, 1280, 900)
	b.signIn(t, base)
	// Overview: the three members are listed.
	testkit.EventuallyTrue(t, 10*time.Second, "three members on the overview", func() bool {
		s := b.text("main")
		return strings.Contains(s, "node1") && strings.Contains(s, "node2") && strings.Contains(s, "node3")
	})
	b.screenshot(t, "ui-overview.png")

	// Apps: the app registered through the public API is listed.
	b.run(t, "apps page", chromedp.Navigate(base+"/ui/#/apps"), chromedp.WaitVisible(`a.app-link`, chromedp.ByQuery))
	testkit.EventuallyTrue(t, 10*time.Second, "demo.checkout listed", func() bool { return strings.Contains(b.text("#apps-result"), "demo.checkout") })
	b.run(t, "search by prefix", chromedp.SendKeys(`#f-prefix`, "demo.ca", chromedp.ByQuery))
	testkit.EventuallyTrue(t, 10*time.Second, "prefix filter", func() bool {
		s := b.text("#apps-result")
		return strings.Contains(s, "demo.cart") && !strings.Contains(s, "demo.checkout")
	})

	// App detail, then a status change from the page.
	b.run(t, "app page", chromedp.Navigate(base+"/ui/#/app/dev/demo.checkout"), chromedp.WaitVisible(`tr[data-hostname="checkout-1"]`, chromedp.ByQuery))
	b.screenshot(t, "ui-app.png")
	b.run(t, "set WAITING from the page",
		chromedp.Click(`tr[data-hostname="checkout-1"] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`#dialog-ok`, chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
	)
	onEveryNode(t, nodes, "WAITING", wire.Key{Env: "dev", AppID: "demo.checkout", Zone: "zone01", Hostname: "checkout-1"},
		func(in wire.Instance, ok bool) bool { return ok && in.Status == 2 })
	testkit.EventuallyTrue(t, 5*time.Second, "the page shows WAITING", func() bool {
		return strings.Contains(b.text(`tr[data-hostname="checkout-1"]`), "WAITING")
	})

	// Metadata from the page: text that is not a JSON object is refused in
	// the dialog, which stays open; a valid object replaces the metadata on
	// every node.
	clickButton := func(host, label string) chromedp.Action {
		return chromedp.Evaluate(fmt.Sprintf(`[...document.querySelectorAll('tr[data-hostname=%q] button')].find(b => b.textContent === %q).click()`, host, label), nil)
	}
	b.run(t, "open the metadata dialog",
		clickButton("checkout-2", "Metadata"),
		chromedp.WaitVisible(`#meta-input`, chromedp.ByQuery),
		chromedp.SetValue(`#meta-input`, `["not", "an object"]`, chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
	)
	testkit.EventuallyTrue(t, 5*time.Second, "the dialog names the error", func() bool {
		return strings.Contains(b.text(`#dialog-body p.err`), "not a JSON object")
	})
	b.run(t, "save valid metadata",
		chromedp.WaitVisible(`#meta-input`, chromedp.ByQuery),
		chromedp.SetValue(`#meta-input`, `{"weight": "5", "color": "blue"}`, chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
	)
	onEveryNode(t, nodes, "new metadata", wire.Key{Env: "dev", AppID: "demo.checkout", Zone: "zone01", Hostname: "checkout-2"},
		func(in wire.Instance, ok bool) bool {
			return ok && len(in.Metadata) == 2 && in.Metadata["weight"] == "5" && in.Metadata["color"] == "blue"
		})

	// Cancel from the page, after its confirmation: gone from every node.
	k0 := wire.Key{Env: "dev", AppID: "demo.checkout", Zone: "zone01", Hostname: "checkout-0"}
	onEveryNode(t, nodes, "checkout-0 before the cancel", k0, func(_ wire.Instance, ok bool) bool { return ok })
	b.run(t, "checkout-0 listed", chromedp.WaitVisible(`tr[data-hostname="checkout-0"]`, chromedp.ByQuery))
	b.run(t, "cancel from the page",
		clickButton("checkout-0", "Cancel"),
		chromedp.WaitVisible(`#dialog-ok`, chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
	)
	onEveryNode(t, nodes, "cancelled", k0, func(_ wire.Instance, ok bool) bool { return !ok })
	testkit.EventuallyTrue(t, 5*time.Second, "the page no longer lists checkout-0", func() bool {
		return b.eval(`String(document.querySelector('tr[data-hostname="checkout-0"]') === null)`) == "true"
	})

	// A registration on another node appears without reload within 1 s.
	start := time.Now()
	if env, err := c2.Register(t.Context(), instance("demo.checkout", "checkout-new", "grpc://10.0.0.9:9000")); err != nil || env.Code != 0 {
		t.Fatalf("register on node2: %v %+v", err, env)
	}
	acked := time.Since(start)
	if _, err := testkit.WithinEvery(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
		return testkit.State(strings.Contains(b.text(`main`), "checkout-new"), "not in the page")
	}); err != nil {
		t.Fatalf("the registration on node2 never appeared in the open page: %v; live=%q %q", err, b.eval(`document.getElementById('live').className + ' ' + document.getElementById('banner').textContent`), b.errors)
	}
	seen := time.Since(start)
	t.Logf("FIGURE ui: registration on another node -> shown in the open page  %s (write acknowledged after %s)", seen.Round(time.Millisecond), acked.Round(time.Millisecond))
	if seen > time.Second {
		t.Errorf("the page showed the registration %s after it was acknowledged, want within 1 s", seen)
	}
	b.noErrors(t)
}

// onEveryNode waits until cond holds for k's copy (and whether there is
// one) on every node.
func onEveryNode(t *testing.T, nodes []*embed.Node, what string, k wire.Key, cond func(wire.Instance, bool) bool) {
	t.Helper()
	for _, nd := range nodes {
		testkit.EventuallyTrue(t, 10*time.Second, what+" on "+nd.Addrs().HTTP, func() bool { return cond(nd.Registry().Get(k)) })
	}
}

// 10 000 apps: the apps page pages them on the server (100 a page), moves
// between pages and searches by prefix without loading them all.
func TestUI_TenThousandApps(t *testing.T) {
	nodes := cluster(t, 1)
	reg := nodes[0].Registry()
	for i := range 10_000 {
		in := instance(fmt.Sprintf("bulk.app-%05d", i), fmt.Sprintf("h-%05d", i), fmt.Sprintf("grpc://10.2.%d.%d:9000", i/250, i%250+1))
		if _, _, err := reg.Register(in, 0); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://" + nodes[0].Addrs().HTTP
	b := newBrowser(t, 1280, 900)
	b.signIn(t, base)
	start := time.Now()
	b.run(t, "apps page", chromedp.Navigate(base+"/ui/#/apps"), chromedp.WaitVisible(`#apps-count`, chromedp.ByQuery))
	testkit.EventuallyTrue(t, 10*time.Second, "first page of 10001 (with infra.discovery)", func() bool {
		return b.text(`#apps-count`) == "1-100 of 10001 apps"
	})
	t.Logf("FIGURE ui: apps page with 10 001 apps shown after %s", time.Since(start).Round(time.Millisecond))
	if n := b.eval(`String(document.querySelectorAll('a.app-link').length)`); n != "100" {
		t.Fatalf("%s app links on the page, want 100", n)
	}
	b.run(t, "next page", chromedp.Evaluate(`[...document.querySelectorAll('.pager button')].find(b => b.textContent === 'next').click()`, nil))
	testkit.EventuallyTrue(t, 10*time.Second, "second page", func() bool { return b.text(`#apps-count`) == "101-200 of 10001 apps" })
	b.run(t, "search by prefix", chromedp.SendKeys(`#f-prefix`, "bulk.app-0999", chromedp.ByQuery))
	testkit.EventuallyTrue(t, 10*time.Second, "prefix narrows to 10 apps", func() bool {
		return b.text(`#apps-count`) == "1-10 of 10 apps" && strings.Contains(b.text(`#apps-result`), "bulk.app-09990")
	})
	b.noErrors(t)
}

// A narrow (phone) screen: nothing overflows the page horizontally (wide
// tables scroll inside their box), and the actions work from the keyboard.
func TestUI_NarrowScreenAndKeyboard(t *testing.T) {
	nodes := cluster(t, 1)
	c := harness.NewClient(nodes[0].Addrs().HTTP)
	defer c.Close()
	if env, err := c.Register(t.Context(), instance("demo.phone", "phone-0", "grpc://10.0.2.1:9000")); err != nil || env.Code != 0 {
		t.Fatalf("register: %v %+v", err, env)
	}
	base := "http://" + nodes[0].Addrs().HTTP
	b := newBrowser(t, 390, 844)
	b.signIn(t, base)
	for _, page := range []string{"/ui/#/", "/ui/#/apps", "/ui/#/app/dev/demo.phone"} {
		b.run(t, "open "+page, chromedp.Navigate(base+page), chromedp.WaitVisible(`main h1`, chromedp.ByQuery))
		var overflow bool
		b.run(t, "measure "+page, chromedp.Evaluate(`document.documentElement.scrollWidth > window.innerWidth + 1`, &overflow))
		if overflow {
			t.Errorf("%s overflows a 390 px screen horizontally", page)
		}
	}
	// Keyboard: focus the row's first action, press Enter, confirm with Enter.
	b.run(t, "keyboard action",
		chromedp.WaitVisible(`tr[data-hostname="phone-0"] button`, chromedp.ByQuery),
		chromedp.Focus(`tr[data-hostname="phone-0"] button`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(`#dialog-ok`, chromedp.ByQuery),
		chromedp.Focus(`#dialog-ok`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
	)
	testkit.EventuallyTrue(t, 10*time.Second, "set WAITING by keyboard", func() bool {
		in, ok := nodes[0].Registry().Get(wire.Key{Env: "dev", AppID: "demo.phone", Zone: "zone01", Hostname: "phone-0"})
		return ok && in.Status == 2
	})
	b.screenshot(t, "ui-narrow.png")
	b.noErrors(t)
}

// Errors are shown plainly: a wrong token is refused with the node's
// message in the page, and no action is taken.
func TestUI_WrongTokenShownPlainly(t *testing.T) {
	nodes := cluster(t, 1)
	b := newBrowser(t, 1280, 900)
	b.run(t, "open with a wrong token",
		chromedp.Navigate("http://"+nodes[0].Addrs().HTTP+"/ui/"),
		chromedp.WaitVisible(`#token-input`, chromedp.ByQuery),
		chromedp.SendKeys(`#token-input`, "not-the-admin-token", chromedp.ByQuery),
		chromedp.Click(`#dialog-ok`, chromedp.ByQuery),
		chromedp.WaitVisible(`#token-input`, chromedp.ByQuery), // asked again
	)
	if s := b.text("#dialog-body"); !strings.Contains(s, "does not match") {
		t.Fatalf("the page does not say the token is wrong: %q", s)
	}
}
