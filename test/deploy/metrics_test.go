package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var (
	metricRef = regexp.MustCompile(`\bdiscovery_[a-z0-9_]+`)
	// A metric name defined in Go source: a string literal holding the full
	// name (the server builds no names from namespace/subsystem parts).
	metricDef = regexp.MustCompile(`"(discovery_[a-z0-9_]+)"`)
)

// definedMetrics scans the server's non-test Go source for metric names.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, dir := range []string{"api", "registry", "syncup", "cmd", "configs"} {
		root := filepath.Join("../..", dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || d.Name() == "client") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricDef.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if len(names) == 0 {
		t.Fatal("no discovery_* metric names found in the server source")
	}
	return names
}

// undefinedRefs returns the metric names exprs use that the server does not
// define (histogram series suffixes resolved to their base name).
func undefinedRefs(exprs []string, defined map[string]bool) []string {
	var missing []string
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			name := ref
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(ref, suf); ok && defined[base] {
					name = base
				}
			}
			if !defined[name] && !slices.Contains(missing, ref) {
				missing = append(missing, ref)
			}
		}
	}
	sort.Strings(missing)
	return missing
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string            `yaml:"alert"`
			Record string            `yaml:"record"`
			Expr   string            `yaml:"expr"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// TestAlerts_CoverIssueAndUseRealMetrics: the alerts the deployment promises
// exist, carry a severity, and query metrics the server really exports.
func TestAlerts_CoverIssueAndUseRealMetrics(t *testing.T) {
	exprs := alertExprs(t)
	for _, want := range []string{"DiscoveryNodeDown", "DiscoveryProtectModeOn", "DiscoveryReplicationFailing", "DiscoveryNodeNotReady"} {
		if _, ok := exprs[want]; !ok {
			t.Errorf("alerts.yml has no alert %s", want)
		}
	}
	var all []string
	for _, e := range exprs {
		all = append(all, e)
	}
	if missing := undefinedRefs(all, definedMetrics(t)); len(missing) > 0 {
		t.Errorf("alerts.yml uses metrics the server does not define: %v", missing)
	}
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/dashboards/discovery.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// TestDashboard_Valid: panel ids unique, layout inside 24 columns, every
// query on the provisioned datasource, every metric real, and the topics
// of the issue present.
func TestDashboard_Valid(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	dsUID := provisionedDatasourceUID(t)
	ids := map[int]bool{}
	var exprs []string
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		titles = append(titles, strings.ToLower(p.Title))
		if p.Datasource == nil || p.Datasource.UID != dsUID {
			t.Errorf("panel %q: datasource %+v, want the provisioned uid %q", p.Title, p.Datasource, dsUID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, topic := range []string{"instances", "apps", "watchers", "protect", "replication lag", "replication errors", "request rate", "latency", "members"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, topic) }) {
			t.Errorf("no panel about %q (titles: %v)", topic, titles)
		}
	}
	if missing := undefinedRefs(exprs, definedMetrics(t)); len(missing) > 0 {
		t.Errorf("dashboard uses metrics the server does not define: %v", missing)
	}
	t.Run("PromQL", func(t *testing.T) { checkPromQL(t, exprs) })
}

// checkPromQL parses every dashboard query with promtool, as recording
// rules (Grafana's variables replaced by values).
func checkPromQL(t *testing.T, exprs []string) {
	bin := promtool(t)
	r := strings.NewReplacer("$__rate_interval", "1m", "$node", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(r.Replace(e))
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("dashboard queries do not parse: %v\n%s", err, out)
	}
}

func provisionedDatasourceUID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/provisioning/datasources/prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Datasources) != 1 || f.Datasources[0].Type != "prometheus" || f.Datasources[0].UID == "" {
		t.Fatalf("want one prometheus datasource with a uid, got %+v", f.Datasources)
	}
	if f.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("datasource url %q: the compose service is prometheus:9090", f.Datasources[0].URL)
	}
	return f.Datasources[0].UID
}

// TestMetricRefs_DetectsUnknownName proves the name check can fail.
func TestMetricRefs_DetectsUnknownName(t *testing.T) {
	defined := map[string]bool{"discovery_a_seconds": true}
	got := undefinedRefs([]string{`rate(discovery_a_seconds_bucket[1m]) + discovery_b_total`}, defined)
	if !slices.Equal(got, []string{"discovery_b_total"}) {
		t.Fatalf("undefinedRefs = %v, want [discovery_b_total]", got)
	}
}
