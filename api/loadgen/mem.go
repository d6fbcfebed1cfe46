package loadgen

// MemoryReport is the resident memory of the local watch nodes while all
// the polls of a round are parked, less what they held before the first
// round (notify, cross-notify). The first round is the figure to read: in
// later ones a node still holds the garbage of the previous wake-up, which
// its next GC collects, so they show a node's peak rather than what a
// parked poll costs.
type MemoryReport struct {
	// Parked is the polls parked on these nodes in round 1 (those that
	// failed to park left out).
	Parked int64        `json:"parked"`
	Nodes  []NodeMemory `json:"nodes"`
	// BytesPerParkedPoll is (RSS in round 1 - RSS before) / Parked, over
	// the local nodes; MaxBytesPerParkedPoll the largest of any round.
	BytesPerParkedPoll    float64 `json:"bytes_per_parked_poll"`
	MaxBytesPerParkedPoll float64 `json:"max_bytes_per_parked_poll"`
}

// NodeMemory is one local node process's VmRSS before the first round and
// once the polls of each round were parked, and how many were parked on it.
// A round in which its RSS could not be read (the process is gone) is 0 and
// left out of the figures.
type NodeMemory struct {
	Addr      string  `json:"addr"`
	PID       int     `json:"pid"`
	RSSBefore int64   `json:"rss_before_bytes"`
	RSSParked []int64 `json:"rss_parked_bytes"`
	Parked    []int64 `json:"parked"`
}

// memMeter samples the watch nodes found by the CPU meter.
type memMeter struct {
	nodes []NodeMemory
	addrs [][]string // per entry: the watch addresses its process serves
	want  []int64    // per entry: the polls a round sends to those addresses
}

// newMemMeter reads the RSS of the local nodes among watch now; want is
// how many polls a round sends to each address. Addresses served by one
// process (in tests), or listed twice, are one entry: they share its RSS.
func newMemMeter(cpu *cpuMeter, watch []string, want map[string]int) *memMeter {
	m := &memMeter{}
	at := map[int]int{} // pid -> index in m.nodes
	seen := map[string]bool{}
	for _, n := range watch {
		pid, ok := cpu.pids[n]
		if !ok || seen[n] {
			continue
		}
		seen[n] = true
		i, ok := at[pid]
		if !ok {
			rss, err := processRSS(pid)
			if err != nil {
				continue
			}
			i = len(m.nodes)
			at[pid] = i
			m.nodes = append(m.nodes, NodeMemory{Addr: n, PID: pid, RSSBefore: rss})
			m.addrs = append(m.addrs, nil)
			m.want = append(m.want, 0)
		}
		m.addrs[i] = append(m.addrs[i], n)
		m.want[i] += int64(want[n])
	}
	return m
}

// sample records every node's RSS and parked polls (those sent less those
// that failed, by address): call it with the round's polls parked.
func (m *memMeter) sample(failed func(node string) int) {
	for i := range m.nodes {
		parked := m.want[i]
		for _, a := range m.addrs[i] {
			parked -= int64(failed(a))
		}
		rss, err := processRSS(m.nodes[i].PID)
		if err != nil {
			rss = 0
		}
		m.nodes[i].RSSParked = append(m.nodes[i].RSSParked, rss)
		m.nodes[i].Parked = append(m.nodes[i].Parked, parked)
	}
}

// report is nil when no local node was measured in round 1.
func (m *memMeter) report() *MemoryReport {
	var rep *MemoryReport
	for round := 0; len(m.nodes) > 0 && round < len(m.nodes[0].RSSParked); round++ {
		var grown, parked int64
		for _, n := range m.nodes {
			if n.RSSParked[round] > 0 {
				grown += n.RSSParked[round] - n.RSSBefore
				parked += n.Parked[round]
			}
		}
		if parked <= 0 {
			continue
		}
		per := float64(grown) / float64(parked)
		if round == 0 {
			rep = &MemoryReport{Parked: parked, Nodes: m.nodes, BytesPerParkedPoll: per, MaxBytesPerParkedPoll: per}
		} else if rep != nil {
			rep.MaxBytesPerParkedPoll = max(rep.MaxBytesPerParkedPoll, per)
		}
	}
	return rep
}
