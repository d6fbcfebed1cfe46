// Package containers is the container test suite of deploy/: it builds the
// discovery image with `make image` and the kratos v0.6.0 test client into a
// second scratch image, runs three-node clusters with deploy/compose.yaml
// (under `docker compose` or Debian's `docker-compose` 1.29) and checks what
// an operator relies on: health, membership, kratos compatibility, a killed
// node, a network partition, a rolling restart under load, and Prometheus
// discovery through http_sd.
//
// The tests need a Docker engine and sit behind a build tag:
//
//	go test -tags containers -count=1 -timeout 15m ./test/containers/
//
// Without an engine they fail rather than skip. Set COMPOSE to force a
// compose command ("docker compose" or "docker-compose"). Nothing is pulled:
// every image is built FROM scratch from binaries built on the host.
package containers
