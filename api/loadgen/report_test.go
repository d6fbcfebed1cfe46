package loadgen

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(float64(len(sorted))*q + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestHistogram_Empty(t *testing.T) {
	var h Histogram
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Max() != 0 {
		t.Fatalf("empty histogram: count %d p50 %v max %v", h.Count(), h.Quantile(0.5), h.Max())
	}
	if s := h.Stats(); s != (Stats{}) {
		t.Fatalf("empty stats: %+v", s)
	}
}

// Small values (below 2*histSub ns) are exact, so nearest-rank is exact.
func TestHistogram_SmallValuesExact(t *testing.T) {
	var h Histogram
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.01, 1}, {0.5, 50}, {0.99, 99}, {0.991, 100}, {1, 100}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Max() != 100 {
		t.Errorf("max %v", h.Max())
	}
}

// For realistic latencies every quantile is within 1/histSub of the exact
// nearest-rank value and never below it; max is exact.
func TestHistogram_RelativeError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]time.Duration, 0, 20000)
	for range 20000 {
		// Log-uniform over 10 µs .. 10 s.
		v := time.Duration(float64(10*time.Microsecond) * math.Pow(10, rng.Float64()*6))
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := exactQuantile(vals, q)
		got := h.Quantile(q)
		if got < want || float64(got-want) > float64(want)/histSub {
			t.Errorf("Quantile(%v) = %v, exact %v (tolerance %.2f%%)", q, got, want, 100.0/histSub)
		}
	}
	if h.Max() != vals[len(vals)-1] {
		t.Errorf("max %v, want %v", h.Max(), vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count %d", h.Count())
	}
}

// Bucket bounds are contiguous and increasing and every value lands in the
// bucket whose bounds contain it.
func TestHistogram_Buckets(t *testing.T) {
	prev := int64(-1)
	for i := range histBuckets {
		up := bucketUpper(i)
		if up <= prev {
			t.Fatalf("bucket %d upper %d <= previous %d", i, up, prev)
		}
		if bucketOf(prev+1) != i || bucketOf(up) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf(lo)=%d bucketOf(hi)=%d", i, prev+1, up, bucketOf(prev+1), bucketOf(up))
		}
		prev = up
	}
	if prev != 1<<63-1 {
		t.Fatalf("last bucket ends at %d, want MaxInt64", prev)
	}
}

func TestHistogram_MergeAndNegative(t *testing.T) {
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	a.Merge(&Histogram{}) // no-op
	if a.Stats() != all.Stats() {
		t.Fatalf("merged %+v, want %+v", a.Stats(), all.Stats())
	}
	var n Histogram
	n.Record(-time.Second)
	if n.Quantile(1) != 0 || n.Count() != 1 {
		t.Fatalf("negative: %v %d", n.Quantile(1), n.Count())
	}
}

func TestHistogram_StatsMilliseconds(t *testing.T) {
	var h Histogram
	for range 99 {
		h.Record(time.Millisecond)
	}
	h.Record(50 * time.Millisecond)
	s := h.Stats()
	if s.Count != 100 || s.P50 < 1 || s.P50 > 1.01 || s.P99 < 1 || s.P99 > 1.01 || s.Max != 50 {
		t.Fatalf("stats %+v", s)
	}
	if s.Mean < 1.48 || s.Mean > 1.5 {
		t.Fatalf("mean %v, want 1.49", s.Mean)
	}
}

func sampleReport() *Report {
	return &Report{
		Scenario:       "notify",
		Nodes:          []string{"127.0.0.1:7171"},
		Concurrency:    32,
		Env:            "bench",
		Zone:           "zone01",
		Params:         map[string]int64{"pollers": 10, "appids": 3},
		ElapsedSeconds: 1.5,
		Results: []Result{
			{Name: "notify", OK: 9, Expected: 10, Latency: Stats{Count: 9, P50: 1.25, P99: 3.5, Max: 4}},
			{Name: "register", OK: 300, OpsPerSec: 200, Latency: Stats{Count: 300, P50: 0.5}},
		},
		Errors:      map[string]int64{"no_answer": 1, "-400": 2},
		Notes:       []string{"hello"},
		Interrupted: true,
	}
}

func TestReport_Table(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"discovery bench notify: nodes 127.0.0.1:7171, concurrency 32",
		"params: appids 3, pollers 10",
		"interrupted",
		"9/10", "200.0", "1.250", "3.500",
		"errors: -400: 2, no_answer: 1",
		"note: hello",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var empty bytes.Buffer
	if err := (&Report{Scenario: "register"}).WriteTable(&empty); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(empty.String(), "errors: none") {
		t.Errorf("empty report:\n%s", empty.String())
	}
}

func TestReport_JSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("want one line, got %q", b.String())
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	res := got["results"].([]any)[0].(map[string]any)
	lat := res["latency"].(map[string]any)
	if res["ok"] != 9.0 || res["expected"] != 10.0 || lat["p99_ms"] != 3.5 || lat["max_ms"] != 4.0 || got["interrupted"] != true {
		t.Fatalf("decoded %v", got)
	}
	if got["errors"].(map[string]any)["no_answer"] != 1.0 {
		t.Fatalf("errors %v", got["errors"])
	}
	// Errors and results are never null.
	b.Reset()
	if err := (&Report{Scenario: "register"}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"errors":{}`) || !strings.Contains(b.String(), `"results":[]`) {
		t.Fatalf("empty report JSON: %s", b.String())
	}
}

func TestEnvelopeCode(t *testing.T) {
	for _, c := range []struct {
		body string
		want int
		ok   bool
	}{
		{`{"code":0,"message":"0","ttl":1}`, 0, true},
		{`{"code":-304,"message":"-304","ttl":1}`, -304, true},
		{`{"message":"x","data":{"code":5,"a":[1,2]},"code":-400}`, -400, true},
		{`{"message":"x"}`, 0, false},
		{`[1]`, 0, false},
		{``, 0, false},
		{`{"code":"0"}`, 0, false},
	} {
		got, err := envelopeCode([]byte(c.body))
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("envelopeCode(%s) = %d, %v; want %d ok=%v", c.body, got, err, c.want, c.ok)
		}
	}
}

func TestMetricValue(t *testing.T) {
	text := `# HELP discovery_http_parked_polls Long-poll requests currently held open.
# TYPE discovery_http_parked_polls gauge
discovery_http_parked_polls 42
discovery_http_parked_polls_other 7
discovery_registry_instances{env="bench"} 100
discovery_registry_instances{env="dev"} 3
`
	for _, c := range []struct {
		name, match string
		want        float64
		found       bool
	}{
		{"discovery_http_parked_polls", "", 42, true},
		{"discovery_registry_instances", `env="bench"`, 100, true},
		{"discovery_registry_instances", `env="prod"`, 0, false},
		{"discovery_registry_apps", "", 0, false},
	} {
		v, found, err := metricValue(strings.NewReader(text), c.name, c.match)
		if err != nil || found != c.found || v != c.want {
			t.Errorf("metricValue(%s,%s) = %v,%v,%v want %v,%v", c.name, c.match, v, found, err, c.want, c.found)
		}
	}
	if _, _, err := metricValue(strings.NewReader("m x\n"), "m", ""); err == nil {
		t.Error("unparsable sample: want error")
	}
}
