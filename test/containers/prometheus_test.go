//go:build containers

package containers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/discovery-go/discovery/internal/testkit"
)

// TestPrometheus runs Debian's prometheus binary on the host with a config
// derived from deploy/prometheus.yml (same jobs and relabeling, pointed at
// the published ports): every node is up, every metric the alerts and the
// dashboard use is exported, and an app registered with a metrics address
// becomes a target through http_sd and leaves after its cancel.
func TestPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus binary not found; install Debian's package: apt-get install -y --no-install-recommends prometheus")
	}
	c := startCluster(t)
	ctx := t.Context()

	// A scrapable app on the host: its metrics address is loopback.
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics", "/custom/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			fmt.Fprintf(w, "# TYPE ct_app_info gauge\nct_app_info{path=%q} 1\n", r.URL.Path)
		default:
			http.NotFound(w, r)
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(ln) }()
	t.Cleanup(func() { _ = app.Close() })
	appPort := ln.Addr().(*net.TCPAddr).Port

	prom := startPrometheus(t, bin, c)

	// 1. The three nodes, found through http_sd of infra.discovery.
	testkit.Poll(t, 60*time.Second, 500*time.Millisecond, "up{job=discovery} == 1 for the three nodes", func() error {
		res, err := prom.query(ctx, `up{job="discovery"}`)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		nodes := map[string]string{}
		for _, r := range res {
			nodes[r.Metric["node"]] = r.value()
		}
		return testkit.State(len(res) == 3 && nodes["node1"] == "1" && nodes["node2"] == "1" && nodes["node3"] == "1", fmt.Sprint(nodes))
	})

	// 2. Every metric the alerts and the dashboard query exists on the
	// nodes (the names were renamed once; this keeps them honest).
	refs := referencedMetrics(t)
	testkit.Poll(t, 30*time.Second, time.Second, "every referenced metric scraped", func() error {
		res, err := prom.query(ctx, `count by (__name__) ({job="discovery", __name__=~"discovery_.+"})`)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		have := map[string]bool{}
		for _, r := range res {
			have[r.Metric["__name__"]] = true
		}
		var missing []string
		for _, name := range refs {
			if !have[name] && !lazyMetrics[strings.TrimSuffix(name, "_bucket")] {
				missing = append(missing, name)
			}
		}
		return testkit.State(len(missing) == 0, fmt.Sprintf("missing %v", missing))
	})

	// 3. Apps: opt in by metadata; prometheus_port and prometheus_path.
	api := c.api("node1")
	scraped := newInstance("ct.metrics.app", "metrics-1", fmt.Sprintf("http://127.0.0.1:%d", appPort), "grpc://127.0.0.1:1")
	scraped.Metadata = map[string]string{"prometheus_scrape": "true"}
	// Its http addr is the API on another port; metrics are on appPort.
	ported := newInstance("ct.metrics.ported", "metrics-2", "http://127.0.0.1:1")
	ported.Metadata = map[string]string{"prometheus_scrape": "true", "prometheus_port": strconv.Itoa(appPort), "prometheus_path": "/custom/metrics"}
	notOptedIn := newInstance("ct.plain.app", "plain-1", fmt.Sprintf("http://127.0.0.1:%d", appPort))
	registered := time.Now()
	for _, in := range []instance{scraped, ported, notOptedIn} {
		if code, err := api.register(ctx, in); err != nil || code != 0 {
			t.Fatalf("register %s: code %d, %v", in.AppID, code, err)
		}
	}
	wantTargets := map[string]string{
		"ct.metrics.app":    fmt.Sprintf("http://127.0.0.1:%d/metrics", appPort),
		"ct.metrics.ported": fmt.Sprintf("http://127.0.0.1:%d/custom/metrics", appPort),
	}
	testkit.Poll(t, 60*time.Second, 500*time.Millisecond, "apps scraped through http_sd", func() error {
		ts, err := prom.targets(ctx)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		got := map[string]string{}
		for _, tg := range ts {
			if tg.Labels["job"] != "apps" {
				continue
			}
			if tg.Health != "up" {
				return testkit.State(false, fmt.Sprintf("%s: health %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
			}
			got[tg.Labels["appid"]] = tg.ScrapeURL
		}
		ok := len(got) == len(wantTargets)
		for appid, u := range wantTargets {
			ok = ok && got[appid] == u
		}
		return testkit.State(ok, fmt.Sprintf("apps targets %v, want %v", got, wantTargets))
	})
	recordFigure(t, "prometheus: registered app -> scraped target", time.Since(registered))
	res, err := prom.query(ctx, `ct_app_info{job="apps", appid="ct.metrics.app", hostname="metrics-1", zone="`+testZone+`", env="`+testEnv+`"}`)
	if err != nil || len(res) != 1 {
		t.Errorf("scraped series of ct.metrics.app with discovery labels: %v %v", res, err)
	}

	// 4. Cancel: the target leaves.
	cancelled := time.Now()
	if code, err := api.cancel(ctx, scraped); err != nil || code != 0 {
		t.Fatalf("cancel: code %d, %v", code, err)
	}
	testkit.Poll(t, 60*time.Second, 500*time.Millisecond, "cancelled app no longer a target", func() error {
		ts, err := prom.targets(ctx)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		var apps []string
		for _, tg := range ts {
			if tg.Labels["job"] == "apps" {
				apps = append(apps, tg.Labels["appid"])
			}
		}
		return testkit.State(slices.Equal(apps, []string{"ct.metrics.ported"}), fmt.Sprint(apps))
	})
	recordFigure(t, "prometheus: cancelled app -> target gone", time.Since(cancelled))

	// 5. The alert rules loaded and evaluate without errors.
	testkit.Poll(t, 30*time.Second, 500*time.Millisecond, "alert rules evaluated without error", func() error {
		rules, err := prom.rules(ctx)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		return testkit.State(rules.count > 0 && len(rules.unhealthy) == 0, fmt.Sprintf("%d rules, not ok: %v", rules.count, rules.unhealthy))
	})
}

// lazyMetrics are vectors whose series appear only after their first event
// (no label value is known in advance), so a fresh cluster need not export
// them.
var lazyMetrics = map[string]bool{
	"discovery_replication_handshakes_total": true,
}

// referencedMetrics lists the series names used in deploy/alerts.yml and
// the Grafana dashboard (histograms as name_bucket, as queried).
func referencedMetrics(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`\bdiscovery_[a-z0-9_]+`)
	var names []string
	for _, f := range []string{"deploy/alerts.yml", "deploy/grafana/dashboards/discovery.json"} {
		b, err := os.ReadFile(filepath.Join(suite.root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllString(string(b), -1) {
			if !slices.Contains(names, m) {
				names = append(names, m)
			}
		}
	}
	slices.Sort(names)
	return names
}

type prometheus struct {
	base string
	hc   *http.Client
}

// startPrometheus writes the derived config and runs prometheus until the
// test ends.
func startPrometheus(t *testing.T, bin string, c *cluster) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := deriveConfig(t, c)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
		"--log.level=info",
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	p := &prometheus{base: "http://" + listen, hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(func() {
		p.hc.CloseIdleConnections()
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("derived prometheus.yml:\n%s\nprometheus log (tail):\n%s", cfg, tail(logs.String(), 8192))
		}
	})
	testkit.Poll(t, 60*time.Second, 200*time.Millisecond, "prometheus ready", func() error {
		resp, err := p.hc.Get(p.base + "/-/ready")
		if err != nil {
			return testkit.State(false, err.Error())
		}
		resp.Body.Close()
		return testkit.State(resp.StatusCode == http.StatusOK, resp.Status)
	})
	return p
}

// deriveConfig turns deploy/prometheus.yml into the test's config: the node
// URLs become the published ports, the advertised node addresses (reachable
// only inside the compose network) are rewritten to those ports by one more
// relabel rule, intervals shrink to 1 s, and rule_files point at deploy/.
func deriveConfig(t *testing.T, c *cluster) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(suite.root, "deploy", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	global := cfg["global"].(map[string]any)
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = "1s", "1s", "1s"
	var rules []any
	for _, f := range cfg["rule_files"].([]any) {
		rules = append(rules, filepath.Join(suite.root, "deploy", f.(string)))
	}
	cfg["rule_files"] = rules

	hostURL := strings.NewReplacer(
		"http://node1:7171", fmt.Sprintf("http://127.0.0.1:%d", c.ports["node1"]),
		"http://node2:7171", fmt.Sprintf("http://127.0.0.1:%d", c.ports["node2"]),
		"http://node3:7171", fmt.Sprintf("http://127.0.0.1:%d", c.ports["node3"]),
	)
	jobs := map[string]bool{}
	for _, sc := range cfg["scrape_configs"].([]any) {
		job := sc.(map[string]any)
		jobs[job["job_name"].(string)] = true
		sds, _ := job["http_sd_configs"].([]any)
		if len(sds) != 3 {
			t.Fatalf("job %s: want http_sd on the three nodes, got %v", job["job_name"], sds)
		}
		for _, sd := range sds {
			m := sd.(map[string]any)
			u := hostURL.Replace(m["url"].(string))
			if !strings.HasPrefix(u, "http://127.0.0.1:") {
				t.Fatalf("job %s: http_sd url %s does not name node1..3:7171", job["job_name"], m["url"])
			}
			m["url"], m["refresh_interval"] = u, "1s"
		}
		if job["job_name"] == "discovery" {
			relabel, _ := job["relabel_configs"].([]any)
			for _, n := range nodeNames {
				relabel = append(relabel, map[string]any{
					"source_labels": []any{"__address__"},
					"regex":         regexp.QuoteMeta(c.httpAddr(n)),
					"target_label":  "__address__",
					"replacement":   fmt.Sprintf("127.0.0.1:%d", c.ports[n]),
				})
			}
			job["relabel_configs"] = relabel
		}
	}
	if !jobs["discovery"] || !jobs["apps"] {
		t.Fatalf("deploy/prometheus.yml jobs %v, want discovery and apps", jobs)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (s promSample) value() string {
	if len(s.Value) == 2 {
		v, _ := s.Value[1].(string)
		return v
	}
	return ""
}

func (p *prometheus) get(ctx context.Context, path string, q url.Values, into any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+q.Encode(), nil)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %w: %.200s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.NewDecoder(bytes.NewReader(env.Data)).Decode(into)
}

func (p *prometheus) query(ctx context.Context, q string) ([]promSample, error) {
	var data struct {
		Result []promSample `json:"result"`
	}
	err := p.get(ctx, "/api/v1/query", url.Values{"query": {q}}, &data)
	return data.Result, err
}

type promTarget struct {
	Labels    map[string]string `json:"labels"`
	ScrapeURL string            `json:"scrapeUrl"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

func (p *prometheus) targets(ctx context.Context) ([]promTarget, error) {
	var data struct {
		Active []promTarget `json:"activeTargets"`
	}
	err := p.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data)
	slices.SortFunc(data.Active, func(a, b promTarget) int { return strings.Compare(a.Labels["appid"], b.Labels["appid"]) })
	return data.Active, err
}

type ruleState struct {
	count     int
	unhealthy []string
}

func (p *prometheus) rules(ctx context.Context) (ruleState, error) {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	var st ruleState
	if err := p.get(ctx, "/api/v1/rules", url.Values{}, &data); err != nil {
		return st, err
	}
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			st.count++
			if r.Health != "ok" {
				st.unhealthy = append(st.unhealthy, r.Name+": "+r.Health+" "+r.LastError)
			}
		}
	}
	return st, nil
}
