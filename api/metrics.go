package api

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/registry"
)

// metrics are the HTTP layer's own metrics plus the registry gauges, which
// are read from Registry.Stats() at scrape time (no second count is kept).
//
// The children of the request metrics are resolved once per (route, code)
// and kept in fixed slots, so a request does not hash its label values
// and take the vector's lock. A slot is filled on first use (not up front),
// so only series that happened are exported.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	counters  [len(routeLabels)][len(codeLabels)]atomic.Pointer[prometheus.Counter]
	observers [len(routeLabels)]atomic.Pointer[prometheus.Observer]
}

// codeLabels are the code label values that get a slot: every discovery
// code and the HTTP statuses of the non-envelope routes. Others (rare HTTP
// statuses) are looked up in the vector each time.
var codeLabels = [...]string{"0", "-304", "-400", "-404", "-409", "-503", codeLabelCanceled,
	"200", "400", "404", "405", "500", "503"}

func codeIndex(code string) int {
	for i, c := range codeLabels {
		if c == code {
			return i
		}
	}
	return -1
}

// request returns the requests counter of (route index, code label).
func (m *metrics) request(route int, code string) prometheus.Counter {
	ci := codeIndex(code)
	if ci < 0 {
		return m.requests.WithLabelValues(routeLabels[route], code)
	}
	slot := &m.counters[route][ci]
	if p := slot.Load(); p != nil {
		return *p
	}
	c := m.requests.WithLabelValues(routeLabels[route], code)
	slot.Store(&c) // a racing request stores the same child
	return c
}

// observer returns the latency histogram of a route index.
func (m *metrics) observer(route int) prometheus.Observer {
	slot := &m.observers[route]
	if p := slot.Load(); p != nil {
		return *p
	}
	o := m.latency.WithLabelValues(routeLabels[route])
	slot.Store(&o)
	return o
}

func newMetrics(r prometheus.Registerer, reg *registry.Registry, parked func() int64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_http_requests_total",
			Help: "HTTP requests by route and answer code (discovery code for protocol routes, else HTTP status).",
		}, []string{"route", "code"}),
		// Long polls (poll, polls) are left out: they are held up to 30 s by
		// design and would only fill the +Inf bucket.
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "discovery_http_request_duration_seconds",
			Help:    "Latency of HTTP requests by route, long polls excluded.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
	}
	cs := []prometheus.Collector{
		m.requests,
		m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "discovery_http_parked_polls",
			Help: "Long-poll requests currently held open.",
		}, func() float64 { return float64(parked()) }),
		newRegistryCollector(reg),
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// registryCollector exposes Registry.Stats() taken once per scrape.
type registryCollector struct {
	reg *registry.Registry

	instances, apps, protected, expected, actual, threshold, evictions, tombstones, waiters, full *prometheus.Desc
}

func newRegistryCollector(reg *registry.Registry) *registryCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &registryCollector{
		reg:        reg,
		instances:  d("discovery_registry_instances", "Registered instances by env.", "env"),
		apps:       d("discovery_registry_apps", "Registered apps by env.", "env"),
		protected:  d("discovery_registry_protected", "1 while self-preservation protects instances from eviction, else 0."),
		expected:   d("discovery_registry_expected_renews_per_minute", "Renews expected per minute (2 per instance)."),
		actual:     d("discovery_registry_renews_per_minute", "Renews counted in the last closed one-minute window."),
		threshold:  d("discovery_registry_renew_threshold_per_minute", "Renews per minute below which the node is protected."),
		evictions:  d("discovery_registry_evictions_total", "Instances evicted since start."),
		tombstones: d("discovery_registry_tombstones", "Cancel tombstones currently remembered."),
		waiters:    d("discovery_registry_poll_waiters", "Long-poll waiters armed in the registry."),
		full:       d("discovery_registry_full_refusals_total", "Writes refused because a new key would exceed registry.max_instances, max_apps or max_envs, by cap.", "cap"),
	}
}

func (c *registryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.instances, c.apps, c.protected, c.expected, c.actual,
		c.threshold, c.evictions, c.tombstones, c.waiters, c.full} {
		ch <- d
	}
}

func (c *registryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.reg.Stats()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for env, n := range st.Instances {
		g(c.instances, float64(n), env)
	}
	for env, n := range st.Apps {
		g(c.apps, float64(n), env)
	}
	prot := 0.0
	if st.Protected {
		prot = 1
	}
	g(c.protected, prot)
	g(c.expected, float64(st.ExpectedRenews))
	g(c.actual, float64(st.LastMinuteRenews))
	g(c.threshold, float64(st.Threshold))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(st.Evictions))
	g(c.tombstones, float64(st.Tombstones))
	g(c.waiters, float64(st.Waiters))
	for _, f := range []struct {
		cap string
		n   uint64
	}{{"max_instances", st.Full.Instances}, {"max_apps", st.Full.Apps}, {"max_envs", st.Full.Envs}} {
		ch <- prometheus.MustNewConstMetric(c.full, prometheus.CounterValue, float64(f.n), f.cap)
	}
}
