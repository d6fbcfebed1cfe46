package api

import (
	"testing"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestMain(m *testing.M) {
	testkit.VerifyTestMain(m)
}
