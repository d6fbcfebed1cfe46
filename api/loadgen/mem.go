package loadgen

// MemoryReport is the resident memory of the local watch nodes while all
// the polls of a round are parked, less what they held before the first
// round (notify, cross-notify). The first round is the figure to read: in
// later ones a node still holds the garbage of the previous wake-up, which
// its next GC collects, so they show a node's peak rather than what a
// parked poll costs.
type MemoryReport struct {
	// Parked is the polls parked on these nodes per round.
	Parked int64        `json:"parked"`
	Nodes  []NodeMemory `json:"nodes"`
	// BytesPerParkedPoll is (RSS in round 1 - RSS before) / Parked, over
	// the local nodes; MaxBytesPerParkedPoll the largest of any round.
	BytesPerParkedPoll    float64 `json:"bytes_per_parked_poll"`
	MaxBytesPerParkedPoll float64 `json:"max_bytes_per_parked_poll"`
}

// NodeMemory is one local node process's VmRSS before the first round and
// once the polls of each round were parked.
type NodeMemory struct {
	Addr      string  `json:"addr"`
	PID       int     `json:"pid"`
	RSSBefore int64   `json:"rss_before_bytes"`
	RSSParked []int64 `json:"rss_parked_bytes"`
}

// memMeter samples the watch nodes found by the CPU meter.
type memMeter struct {
	parked int64
	nodes  []NodeMemory
}

// newMemMeter reads the RSS of the local nodes among watch now; parked is
// how many polls a round parks on a node. Nodes served by one process (in
// tests) are one entry: they share its RSS.
func newMemMeter(cpu *cpuMeter, watch []string, parked func(node string) int) *memMeter {
	m := &memMeter{}
	at := map[int]int{} // pid -> index in m.nodes
	for _, n := range watch {
		pid, ok := cpu.pids[n]
		if !ok {
			continue
		}
		if _, seen := at[pid]; !seen {
			rss, err := processRSS(pid)
			if err != nil {
				continue
			}
			at[pid] = len(m.nodes)
			m.nodes = append(m.nodes, NodeMemory{Addr: n, PID: pid, RSSBefore: rss})
		}
		m.parked += int64(parked(n))
	}
	return m
}

// sample records every node's RSS: call it with the round's polls parked.
func (m *memMeter) sample() {
	for i := range m.nodes {
		rss, err := processRSS(m.nodes[i].PID)
		if err != nil {
			rss = 0 // the node is gone; its later rounds count as nothing
		}
		m.nodes[i].RSSParked = append(m.nodes[i].RSSParked, rss)
	}
}

// report is nil when no local node was measured or no round parked.
func (m *memMeter) report() *MemoryReport {
	if len(m.nodes) == 0 || m.parked == 0 || len(m.nodes[0].RSSParked) == 0 {
		return nil
	}
	rep := &MemoryReport{Parked: m.parked, Nodes: m.nodes}
	for round := range m.nodes[0].RSSParked {
		var grown int64
		for _, n := range m.nodes {
			if round < len(n.RSSParked) {
				grown += n.RSSParked[round] - n.RSSBefore
			}
		}
		per := float64(grown) / float64(m.parked)
		if round == 0 {
			rep.BytesPerParkedPoll = per
		}
		rep.MaxBytesPerParkedPoll = max(rep.MaxBytesPerParkedPoll, per)
	}
	return rep
}
