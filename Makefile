# Build, image and local cluster targets. `make help` lists them.
#
# Nothing here pulls an image: the server is built statically on the host and
# packed FROM scratch (deploy/Dockerfile).

SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DIR ?= .build
IMAGE     ?= discovery:dev
# Compose project name of the local cluster (`-p`; compose.yaml sets no name).
PROJECT   ?= discovery
# Compose v2 plugin if present, else Debian's docker-compose 1.29.
COMPOSE   ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo docker-compose; fi)

LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# The local cluster's cluster secret and admin token, made once by
# `discovery keygen` and kept (mode 0600, never committed) so the cluster
# can be restarted; variables already set in the shell win.
SECRETS ?= $(BUILD_DIR)/cluster.env
COMPOSE_CMD = set -a && . ./$(SECRETS) && set +a && \
	DISCOVERY_IMAGE=$(IMAGE) $(COMPOSE) -p $(PROJECT) -f deploy/compose.yaml

.PHONY: help build image test test-go fuzz-short bench-smoke lint test-deploy test-containers check-deploy \
        cluster-up cluster-down cluster-ps cluster-logs observability-up clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## static linux binary .build/discovery
	@mkdir -p $(BUILD_DIR) && echo '*' > $(BUILD_DIR)/.gitignore
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BUILD_DIR)/discovery ./cmd/discovery

image: build ## container image discovery:dev (IMAGE=...), FROM scratch, no pull
	docker build -f deploy/Dockerfile -t $(IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) $(BUILD_DIR)

test: lint test-go fuzz-short bench-smoke test-deploy test-containers ## the whole suite, exactly what .ci/run runs

# Go modules tested by test-go: the server (with test/), the wire types, the
# SDK and the test toolkit are modules of their own.
GO_MODULES := . api/wire api/client internal/testkit

test-go: ## unit, HTTP, cluster, multi-process and kratos compatibility tests (no Docker)
	@set -e; for m in $(GO_MODULES); do echo "== $$m"; (cd $$m && $(GO) test -race -count=1 -timeout 20m ./...); done

# Every fuzz target as module:package:target. go test replays each
# target's committed corpus (testdata/fuzz) on every run; fuzz-short also
# mutates for FUZZTIME each.
FUZZ_TARGETS := \
	.:./api:FuzzFormBinding .:./api:FuzzPollsPairs .:./api:FuzzMetadata .:./api:FuzzHandlers .:./api:FuzzLeanWriteRequest \
	.:./registry:FuzzPlainAddr .:./registry:FuzzPackHostAddrs .:./syncup:FuzzDecodeMeta .:./syncup:FuzzHandlerReplicate \
	api/wire:.:FuzzFastDecode api/wire:.:FuzzDecodeSnapshot \
	api/client:.:FuzzDecodePolls
FUZZTIME ?= 8s

fuzz-short: ## run every fuzz target for FUZZTIME (default 8s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		m=$${t%%:*}; rest=$${t#*:}; p=$${rest%%:*}; f=$${rest#*:}; \
		echo "== fuzz $$f ($$m $$p)"; \
		(cd $$m && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$p) || exit 1; \
	done

# Every benchmark once: the figures of docs/benchmarks.md come from them, and
# one that no longer runs (a request refused since a security change) would
# only show when someone next measures.
bench-smoke: ## run every benchmark once (-benchtime 1x), in each Go module
	@set -e; for m in $(GO_MODULES); do echo "== bench $$m"; (cd $$m && $(GO) test -run '^$$' -bench . -benchtime 1x -count=1 ./...); done

GOLANGCI_LINT ?= golangci-lint

# Nested modules with tests of their own (test-deploy, test/compat's kratos
# client): linted too, resolving their dependencies as test-deploy does.
LINT_NESTED := test/deploy test/kratos

lint: ## golangci-lint (v2, .golangci.yml) on every Go module
	@set -e; for m in $(GO_MODULES); do echo "== lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...); done
	@set -e; for m in $(LINT_NESTED); do echo "== lint $$m"; (cd $$m && GOFLAGS=-mod=mod $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...); done

test-deploy: ## compose and Prometheus config tests (nested module test/deploy; needs promtool)
	cd test/deploy && GOFLAGS=-mod=mod $(GO) test -count=1 ./...

test-containers: ## container suite: builds images, runs 3-node clusters (needs a Docker engine)
	$(GO) test -tags containers -count=1 -timeout 15m -v ./test/containers/

check-deploy: ## promtool check of deploy/prometheus.yml and deploy/alerts.yml
	deploy/check.sh

$(SECRETS):
	@mkdir -p $(BUILD_DIR) && echo '*' > $(BUILD_DIR)/.gitignore
	@umask 077 && { \
		echo "DISCOVERY_CLUSTER_SECRET=$${DISCOVERY_CLUSTER_SECRET:-$$($(GO) run ./cmd/discovery keygen)}"; \
		echo "DISCOVERY_ADMIN_TOKEN=$${DISCOVERY_ADMIN_TOKEN:-$$($(GO) run ./cmd/discovery keygen)}"; \
	} > $@.tmp && mv $@.tmp $@
	@echo "cluster secret and admin token in $@ (source it to use the token: . $@)"

cluster-up: image $(SECRETS) ## start the 3-node cluster (HTTP on 127.0.0.1:7171-7173), with a secret and admin token
	$(COMPOSE_CMD) up -d

cluster-down: $(SECRETS) ## stop the cluster and remove its network and volumes
	$(COMPOSE_CMD) --profile observability down -v --remove-orphans

cluster-ps: $(SECRETS) ## show the cluster's containers and health
	$(COMPOSE_CMD) ps

cluster-logs: $(SECRETS) ## follow the cluster's logs
	$(COMPOSE_CMD) logs -f

observability-up: cluster-up ## also start Prometheus and Grafana (pulls their public images)
	$(COMPOSE_CMD) --profile observability up -d

clean: ## remove build outputs
	rm -rf $(BUILD_DIR)
