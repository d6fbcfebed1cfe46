package client

import "github.com/prometheus/client_golang/prometheus"

// metrics are created always (so call sites need no nil checks) and
// registered only when a registerer is given.
type metrics struct {
	polls         *prometheus.CounterVec
	nodeSwitches  prometheus.Counter
	renews        *prometheus.CounterVec
	registrations *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, nodes func() float64, watched func() float64) (*metrics, error) {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_client_polls_total",
			Help: "Long-poll requests by result: changed, not_modified, interrupted (a new appid was watched), error.",
		}, []string{"result"}),
		nodeSwitches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_client_node_switches_total",
			Help: "Times the client moved to another discovery node after a failure.",
		}),
		renews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_client_renews_total",
			Help: "Registration heartbeats by result: ok, not_found (re-registered), error.",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_client_registrations_total",
			Help: "Register requests (first and after -404) by result: ok, error.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.polls, m.nodeSwitches, m.renews, m.registrations,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "discovery_client_nodes",
			Help: "Discovery nodes the client may use (learned plus seeds).",
		}, nodes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "discovery_client_watched_apps",
			Help: "Appids in the client's long-poll, infra.discovery included.",
		}, watched),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
