package loadgen

import (
	"fmt"
	"strings"
)

// CPUReport is the CPU time spent during the timed phase by the nodes that
// run on this machine (found by their listening port) and by the load tool
// itself, per operation: on a shared machine it tells a node's limit from
// the load tool's.
type CPUReport struct {
	// Ops is what the per-op figures divide by: the first result's OK.
	Ops int64 `json:"ops"`
	// Nodes: per node address, its process and CPU seconds; nodes not
	// found on this machine are left out.
	Nodes            []NodeCPU `json:"nodes"`
	NodeSeconds      float64   `json:"node_seconds"`
	NodeMicrosPerOp  float64   `json:"node_us_per_op,omitempty"`
	BenchSeconds     float64   `json:"bench_seconds"`
	BenchMicrosPerOp float64   `json:"bench_us_per_op,omitempty"`
	// Note says why node figures are missing, if they are.
	Note string `json:"note,omitempty"`
}

// NodeCPU is one local node process.
type NodeCPU struct {
	Addr    string  `json:"addr"`
	PID     int     `json:"pid"`
	Seconds float64 `json:"seconds"`
}

// cpuMeter samples process CPU times around a timed phase.
type cpuMeter struct {
	nodes []string
	pids  map[string]int
	start map[int]float64
	self0 float64
	note  string
}

func newCPUMeter(nodes []string) *cpuMeter {
	m := &cpuMeter{nodes: nodes, pids: map[string]int{}}
	var missing []string
	for _, n := range nodes {
		pid, err := pidListening(n)
		if err != nil {
			missing = append(missing, n)
			continue
		}
		m.pids[n] = pid
	}
	if len(missing) > 0 {
		m.note = fmt.Sprintf("no local process found listening at %s (node CPU counts local nodes only)", strings.Join(missing, ", "))
	}
	return m
}

func (m *cpuMeter) begin() {
	m.start = map[int]float64{}
	for _, pid := range m.pids {
		if s, err := processCPU(pid); err == nil {
			m.start[pid] = s
		}
	}
	m.self0, _ = selfCPU()
}

// end closes the phase; ops is the operation count the figures divide by.
func (m *cpuMeter) end(ops int64) *CPUReport {
	if m.start == nil {
		return nil
	}
	rep := &CPUReport{Ops: ops, Note: m.note, Nodes: []NodeCPU{}}
	for _, n := range m.nodes {
		pid, ok := m.pids[n]
		if !ok {
			continue
		}
		s0, ok := m.start[pid]
		s1, err := processCPU(pid)
		if !ok || err != nil {
			continue
		}
		rep.Nodes = append(rep.Nodes, NodeCPU{Addr: n, PID: pid, Seconds: s1 - s0})
		rep.NodeSeconds += s1 - s0
	}
	if s, err := selfCPU(); err == nil {
		rep.BenchSeconds = s - m.self0
	}
	if ops > 0 {
		if len(rep.Nodes) > 0 {
			rep.NodeMicrosPerOp = rep.NodeSeconds / float64(ops) * 1e6
		}
		rep.BenchMicrosPerOp = rep.BenchSeconds / float64(ops) * 1e6
	}
	m.start = nil
	return rep
}
