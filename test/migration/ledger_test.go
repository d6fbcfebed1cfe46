package migration

import (
	"strings"
	"testing"

	"github.com/discovery-go/discovery/api/wire"
)

// TestLedger_ClassifiesWatcherHistories proves the checker behind the
// "no watcher ever sees a live instance disappear" assertions (requirements
// 4 and 5) on made-up histories: a disappearance after the instance was
// confirmed everywhere fails, as does one never healed or healed late; a
// one-notification gap before confirmation, healed within flickerMax, is
// a flicker; a client that left may disappear.
func TestLedger_ClassifiesWatcherHistories(t *testing.T) {
	ev := func(ts int64, hosts ...string) kEvent {
		e := kEvent{Event: "instances", AppID: "a", LastTs: ts}
		for _, h := range hosts {
			e.Instances = append(e.Instances, wire.Instance{Hostname: h})
		}
		return e
	}
	at := func(clock string) *answer { return &answer{At: "12/02-05:00:" + clock, Node: "n"} }
	for _, c := range []struct {
		name              string
		evs               []kEvent
		src               []*answer
		from, until       map[string]int
		violations, flick int
	}{
		{"steady", []kEvent{ev(1, "x"), ev(2, "x", "y"), ev(3, "x", "y")},
			[]*answer{at("00.000"), at("00.100"), at("00.200")}, map[string]int{"x": 0, "y": 1}, nil, 0, 0},
		{"gone after confirmation", []kEvent{ev(1, "x"), ev(2, "x", "y"), ev(3, "x"), ev(4, "x", "y")},
			[]*answer{at("00.000"), at("00.100"), at("00.200"), at("00.201")}, map[string]int{"x": 0, "y": 1}, nil, 1, 0},
		{"flicker before confirmation", []kEvent{ev(1, "x"), ev(2, "x", "y"), ev(3, "x"), ev(4, "x", "y")},
			[]*answer{at("00.000"), at("00.100"), at("00.200"), at("00.203")}, map[string]int{"x": 0, "y": 3}, nil, 0, 1},
		{"healed too late", []kEvent{ev(1, "x"), ev(2, "x", "y"), ev(3, "x"), ev(4, "x", "y")},
			[]*answer{at("00.000"), at("00.100"), at("00.200"), at("01.200")}, map[string]int{"x": 0, "y": 3}, nil, 1, 0},
		{"healed two notifications later", []kEvent{ev(1, "x", "y"), ev(2, "x"), ev(3, "x"), ev(4, "x", "y")},
			[]*answer{at("00.000"), at("00.001"), at("00.002"), at("00.003")}, map[string]int{"x": 0, "y": 3}, nil, 2, 0},
		{"never back", []kEvent{ev(1, "x", "y"), ev(2, "x")},
			[]*answer{at("00.000"), at("00.001")}, map[string]int{"x": 0}, nil, 1, 0},
		{"answer unknown", []kEvent{ev(1, "x", "y"), ev(2, "x"), ev(3, "x", "y")},
			[]*answer{at("00.000"), nil, at("00.002")}, map[string]int{"x": 0}, nil, 1, 0},
		{"left", []kEvent{ev(1, "x", "y"), ev(2, "x")},
			[]*answer{at("00.000"), at("00.001")}, map[string]int{"x": 0, "y": 0}, map[string]int{"y": 1}, 0, 0},
	} {
		v, f := checkHistory("w", "a", c.evs, c.src, c.from, c.until)
		if len(v) != c.violations || len(f) != c.flick {
			t.Errorf("%s: %d violations, %d flickers, want %d, %d:\n%s", c.name, len(v), len(f), c.violations, c.flick, strings.Join(append(v, f...), "\n"))
		}
	}
}
