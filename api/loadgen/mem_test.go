package loadgen

import (
	"bytes"
	"strings"
	"testing"
)

// The figures divide the growth of all local nodes together by the polls
// parked on them; round 1 is the headline, the largest round the maximum.
func TestMemMeter_Report(t *testing.T) {
	m := &memMeter{parked: 100, nodes: []NodeMemory{
		{Addr: "a", PID: 1, RSSBefore: 1000, RSSParked: []int64{41000, 91000}},
		{Addr: "b", PID: 2, RSSBefore: 2000, RSSParked: []int64{22000, 12000}},
	}}
	rep := m.report()
	if rep.Parked != 100 || rep.BytesPerParkedPoll != 600 || rep.MaxBytesPerParkedPoll != 1000 {
		t.Fatalf("report %+v: want 600 B per poll in round 1, 1000 at most", rep)
	}
	var b bytes.Buffer
	if err := (&Report{Scenario: "notify", Memory: rep}).WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if want := "memory: 600 B RSS per parked poll in round 1, at most 1000 B in any round (100 parked on a pid 1 b pid 2)"; !strings.Contains(b.String(), want) {
		t.Fatalf("table lacks %q:\n%s", want, b.String())
	}
	for _, empty := range []*memMeter{{}, {parked: 5, nodes: []NodeMemory{{PID: 1}}}} {
		if r := empty.report(); r != nil {
			t.Fatalf("report of %+v: %+v, want none", empty, r)
		}
	}
}
