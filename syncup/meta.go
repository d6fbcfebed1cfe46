package syncup

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/memberlist"
)

// Node meta is what every member gossips about itself: enough to reach its
// HTTP API and to tell a graceful leave from a crash. Instance data never
// travels in gossip.
//
// Encoding: one version byte (metaVersion) followed by a JSON object with
// one-letter keys. The version byte lets a later release change the layout
// while old nodes refuse (and ignore) what they cannot read.
const metaVersion byte = 1

// Member status carried in meta.
const (
	metaAlive   = 0
	metaLeaving = 1
)

// nodeMeta is the decoded node metadata.
type nodeMeta struct {
	HTTPAddr string `json:"a"` // advertised HTTP host:port
	Zone     string `json:"z"`
	Env      string `json:"e"`
	Hostname string `json:"h"`
	Version  string `json:"v,omitempty"`
	Status   int    `json:"s"` // metaAlive or metaLeaving
}

var errMetaVersion = errors.New("unknown node meta version")

// encodeMeta encodes m and checks the memberlist limit, because memberlist
// panics on oversized meta instead of returning an error.
func encodeMeta(m nodeMeta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+1)
	out = append(out, metaVersion)
	out = append(out, b...)
	if len(out) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node meta is %d bytes, memberlist allows %d: shorten zone, env, hostname, version or http advertise address", len(out), memberlist.MetaMaxSize)
	}
	return out, nil
}

// decodeMeta parses meta from a peer. Peers are not trusted: anything
// malformed is an error, never a panic.
func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 {
		return m, errors.New("empty node meta")
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("%w %d", errMetaVersion, b[0])
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m, fmt.Errorf("node meta: %w", err)
	}
	if _, _, err := net.SplitHostPort(m.HTTPAddr); err != nil {
		return m, fmt.Errorf("node meta: http addr %q: %w", m.HTTPAddr, err)
	}
	if m.Zone == "" {
		return m, errors.New("node meta: empty zone")
	}
	if m.Status != metaAlive && m.Status != metaLeaving {
		return m, fmt.Errorf("node meta: unknown status %d", m.Status)
	}
	return m, nil
}
