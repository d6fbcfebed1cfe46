package registry

import "iter"

// zoneBucket holds one zone's instances of an app. Most zones hold a few
// instances: up to smallMax they live in a slice (8 bytes each) rather than a
// map (about 250 bytes even for a single entry), which halves the memory of
// apps with one or two instances per zone. Larger zones switch to a map for
// O(1) lookups and stay there.
type zoneBucket struct {
	name  string
	small []*rec          // used while big == nil
	big   map[string]*rec // nil until the zone outgrows small
	up    int             // UP instances
}

const smallMax = 8

func (b *zoneBucket) get(host string) *rec {
	if b.big != nil {
		return b.big[host]
	}
	for _, rc := range b.small {
		if rc.hostname == host {
			return rc
		}
	}
	return nil
}

// set stores nr under its hostname and returns the record it replaced.
func (b *zoneBucket) set(nr *rec) (old *rec) {
	if b.big != nil {
		old = b.big[nr.hostname]
		b.big[nr.hostname] = nr
		return old
	}
	for i, rc := range b.small {
		if rc.hostname == nr.hostname {
			b.small[i] = nr
			return rc
		}
	}
	if len(b.small) < smallMax {
		b.small = append(b.small, nr)
		return nil
	}
	b.big = make(map[string]*rec, 2*smallMax)
	for _, rc := range b.small {
		b.big[rc.hostname] = rc
	}
	b.small = nil
	b.big[nr.hostname] = nr
	return nil
}

func (b *zoneBucket) del(host string) {
	if b.big != nil {
		delete(b.big, host)
		return
	}
	for i, rc := range b.small {
		if rc.hostname == host {
			last := len(b.small) - 1
			b.small[i] = b.small[last]
			b.small[last] = nil
			b.small = b.small[:last]
			if last == 0 {
				b.small = nil
			}
			return
		}
	}
}

func (b *zoneBucket) len() int {
	if b.big != nil {
		return len(b.big)
	}
	return len(b.small)
}

// recs yields every record of the zone (no particular order).
func (b *zoneBucket) recs() iter.Seq[*rec] {
	return func(yield func(*rec) bool) {
		if b.big != nil {
			for _, rc := range b.big {
				if !yield(rc) {
					return
				}
			}
			return
		}
		for _, rc := range b.small {
			if !yield(rc) {
				return
			}
		}
	}
}
