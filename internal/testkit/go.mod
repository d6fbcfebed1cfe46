module github.com/discovery-go/discovery/internal/testkit

go 1.22

require go.uber.org/goleak v1.3.0
