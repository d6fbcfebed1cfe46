package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Every goroutine (poll loop, renew loops, HTTP connections) must be gone
	// after Close and the fake servers' cleanup.
	goleak.VerifyTestMain(m)
}
