//go:build !linux

package harness

import (
	"errors"
	"net/netip"
)

// socketOwner needs /proc; elsewhere fault injection can only block traffic
// into a node, not traffic a blocked node starts.
func socketOwner(client, server netip.AddrPort, candidates []int) (int, bool, error) {
	return 0, false, errors.New("socket owner lookup needs Linux /proc")
}
