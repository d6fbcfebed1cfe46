package loadgen

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
)

// The figures divide the growth of all local nodes together by the polls
// parked on them; round 1 is the headline, the largest round the maximum;
// a round in which a node's RSS could not be read leaves that node (and its
// polls) out.
func TestMemMeter_Report(t *testing.T) {
	m := &memMeter{nodes: []NodeMemory{
		{Addr: "a", PID: 1, RSSBefore: 1000, RSSParked: []int64{41000, 91000, 0}, Parked: []int64{60, 60, 60}},
		{Addr: "b", PID: 2, RSSBefore: 2000, RSSParked: []int64{22000, 0, 0}, Parked: []int64{40, 40, 40}},
	}}
	rep := m.report()
	if rep.Parked != 100 || rep.BytesPerParkedPoll != 600 || rep.MaxBytesPerParkedPoll != 1500 {
		t.Fatalf("report %+v: want 100 parked, 600 B per poll in round 1, 1500 at most (round 2, node a alone)", rep)
	}
	var b bytes.Buffer
	if err := (&Report{Scenario: "notify", Memory: rep}).WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if want := "memory: 600 B RSS per parked poll in round 1, at most 1500 B in any round (100 parked on a pid 1 b pid 2)"; !strings.Contains(b.String(), want) {
		t.Fatalf("table lacks %q:\n%s", want, b.String())
	}
	for _, empty := range []*memMeter{
		{},
		{nodes: []NodeMemory{{PID: 1}}},
		{nodes: []NodeMemory{{PID: 1, RSSBefore: 5, RSSParked: []int64{0, 50}, Parked: []int64{5, 5}}}}, // gone in round 1
		{nodes: []NodeMemory{{PID: 1, RSSBefore: 5, RSSParked: []int64{50}, Parked: []int64{0}}}},       // nothing parked
	} {
		if r := empty.report(); r != nil {
			t.Fatalf("report of %+v: %+v, want none", empty, r)
		}
	}
}

// Addresses of one process, or an address listed twice, are one entry that
// counts each address's polls once; polls that failed to park are not
// counted as parked.
func TestMemMeter_OneEntryPerProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process RSS is read from Linux /proc")
	}
	pid := os.Getpid()
	cpu := &cpuMeter{pids: map[string]int{"a": pid, "b": pid}}
	m := newMemMeter(cpu, []string{"a", "b", "a", "c"}, map[string]int{"a": 3, "b": 2, "c": 7})
	if len(m.nodes) != 1 || m.nodes[0].PID != pid || m.nodes[0].RSSBefore <= 0 || m.want[0] != 5 {
		t.Fatalf("entries %+v want %v: one for pid %d, 5 polls (c is not local)", m.nodes, m.want, pid)
	}
	m.sample(func(n string) int {
		if n == "a" {
			return 1
		}
		return 0
	})
	if n := m.nodes[0]; len(n.Parked) != 1 || n.Parked[0] != 4 || len(n.RSSParked) != 1 || n.RSSParked[0] <= 0 {
		t.Fatalf("sample %+v: want 4 parked (one of a's failed) and an RSS", n)
	}
	if rep := m.report(); rep == nil || rep.Parked != 4 {
		t.Fatalf("report %+v", rep)
	}
}
