package registry

import (
	"fmt"
	"slices"
	"testing"
)

func TestZoneBucketSmallAndBig(t *testing.T) {
	var b zoneBucket
	want := map[string]*rec{}
	check := func(stage string) {
		t.Helper()
		if b.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", stage, b.len(), len(want))
		}
		var seen []string
		for rc := range b.recs() {
			if want[rc.hostname] != rc {
				t.Fatalf("%s: unexpected record %s", stage, rc.hostname)
			}
			seen = append(seen, rc.hostname)
		}
		if len(seen) != len(want) {
			t.Fatalf("%s: iterated %d records, want %d", stage, len(seen), len(want))
		}
		for h, rc := range want {
			if b.get(h) != rc {
				t.Fatalf("%s: get(%s) wrong", stage, h)
			}
		}
		if b.get("absent") != nil {
			t.Fatalf("%s: get of an absent host", stage)
		}
	}
	for i := range 20 {
		h := fmt.Sprintf("h%02d", i)
		rc := &rec{hostname: h}
		if old := b.set(rc); old != nil {
			t.Fatalf("set of new %s returned %v", h, old)
		}
		want[h] = rc
		if (i < smallMax) != (b.big == nil) {
			t.Fatalf("after %d records: big = %v", i+1, b.big != nil)
		}
		check(fmt.Sprintf("insert %d", i))
	}
	// Replace in the map form; delete down to zero.
	nr := &rec{hostname: "h03"}
	if old := b.set(nr); old != want["h03"] {
		t.Fatal("replace did not return the old record")
	}
	want["h03"] = nr
	check("replace")
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})
	for _, h := range keys {
		b.del(h)
		delete(want, h)
		check("delete " + h)
	}

	// Small form: replace and delete from the middle.
	var s zoneBucket
	a, c, d := &rec{hostname: "a"}, &rec{hostname: "c"}, &rec{hostname: "d"}
	s.set(a)
	s.set(c)
	s.set(d)
	a2 := &rec{hostname: "a"}
	if s.set(a2) != a || s.get("a") != a2 || s.len() != 3 {
		t.Fatal("small replace")
	}
	s.del("c")
	s.del("zz")
	if s.len() != 2 || s.get("c") != nil || s.get("d") != d {
		t.Fatal("small delete")
	}
	s.del("a")
	s.del("d")
	if s.len() != 0 || s.small != nil {
		t.Fatal("small not emptied")
	}
}

// Through the registry: a zone that outgrows the slice keeps every instance.
func TestLargeZone(t *testing.T) {
	r := newTestReg(t)
	for i := range 30 {
		r.reg(inst(appA, z1, fmt.Sprintf("h%02d", i)))
	}
	for i := 0; i < 30; i += 3 {
		if _, err := r.Cancel(keyOf(appA, z1, fmt.Sprintf("h%02d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	info, err := r.Fetch(env, appA, z1, 3)
	if err != nil || len(info.Instances[z1]) != 20 {
		t.Fatalf("Fetch = %d instances, %v", len(info.Instances[z1]), err)
	}
	if s := r.Stats(); s.Instances[env] != 20 {
		t.Fatalf("stats %+v", s)
	}
}
