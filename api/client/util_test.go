package client_test

import (
	"slices"

	"github.com/discovery-go/discovery/api/client"
)

func hostsOf(s *client.Instances) []string {
	var out []string
	for _, in := range s.All() {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
