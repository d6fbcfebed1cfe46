package client_test

import (
	"testing"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestMain(m *testing.M) {
	// Every goroutine (poll loop, renew loops, HTTP connections) must be gone
	// after Close and the fake servers' cleanup.
	testkit.VerifyTestMain(m)
}
