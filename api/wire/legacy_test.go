package wire

import (
	"slices"
	"testing"
)

// Defect D4: addrs comma-joined by an original node are split back; any
// other addr, with or without a comma, is left alone.
func TestSplitJoinedAddrs(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
		changed  bool
	}{
		{[]string{"grpc://a:1,http://a:2"}, []string{"grpc://a:1", "http://a:2"}, true},
		{[]string{"grpc://a:1", "http://b:2, grpc://c:3"}, []string{"grpc://a:1", "http://b:2", "grpc://c:3"}, true},
		{[]string{"grpc://a:1", "http://a:2"}, []string{"grpc://a:1", "http://a:2"}, false},
		{[]string{"grpc://a:1,b"}, []string{"grpc://a:1,b"}, false}, // not a list of URLs: left to validation
		{[]string{","}, []string{","}, false},
		{nil, nil, false},
	} {
		got, changed := SplitJoinedAddrs(tc.in)
		if !slices.Equal(got, tc.want) || changed != tc.changed {
			t.Errorf("%q: got %q %v, want %q %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
	in := Instance{Addrs: []string{"grpc://a:1,http://a:2"}}
	if !RepairJoinedAddrs(&in) || len(in.Addrs) != 2 {
		t.Fatalf("RepairJoinedAddrs: %q", in.Addrs)
	}
}
