module github.com/discovery-go/discovery/api/client

// The lowest Go and dependency versions the SDK needs (kratos users are
// often on older toolchains); minimal version selection lets a program
// use newer ones. go vet checks that no newer standard library API is used.
go 1.22

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/discovery-go/discovery/api/wire v0.0.0-00010101000000-000000000000
	github.com/discovery-go/discovery/internal/testkit v0.0.0-00010101000000-000000000000
	github.com/prometheus/client_golang v1.19.1
	google.golang.org/grpc v1.64.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.2.0 // indirect
	github.com/prometheus/client_model v0.5.0 // indirect
	github.com/prometheus/common v0.48.0 // indirect
	github.com/prometheus/procfs v0.12.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/net v0.22.0 // indirect
	golang.org/x/sys v0.18.0 // indirect
	golang.org/x/text v0.14.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240318140521-94a12d6c2237 // indirect
	google.golang.org/protobuf v1.33.0 // indirect
)

// In this repository the SDK builds against the wire types and test
// toolkit beside it; a release tags all three modules together.
replace (
	github.com/discovery-go/discovery/api/wire => ../wire
	github.com/discovery-go/discovery/internal/testkit => ../../internal/testkit
)
