# Outpost. `make run` starts a coordinator with an embedded NATS server and a
# local agent; `make test` runs every test, the e2e suite included.
GO      ?= go
BIN     := bin
PKGS    := ./...
NATS_VERSION        := v0.5.1
NATS_SERVER_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)

.PHONY: all build run test unit e2e fuzz vet fmt tools clean soak dist dist-check

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	$(BIN)/coordinator run

# Everything CI runs: formatting, vet, unit and e2e tests under the race
# detector, and the fuzz corpora as ordinary tests.
test: vet fmt
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: build
	$(GO) test -race -count=1 -timeout 15m ./e2e/

# The full soak: 2,000 jobs on 4 agents through agent SIGKILLs, a
# coordinator and a server restart and a 10 s network cut of an agent in a
# namespace behind NAT (root, iproute2 and iptables; skipped otherwise). A
# small one runs with every 'make test'.
soak:
	OUTPOST_SOAK=1 $(GO) test -count=1 -timeout 40m -run '^TestSoak$$' -v ./e2e/

# Fuzz each parser for a while (FUZZTIME=30s by default); new crashers land
# in testdata/fuzz and then run with every `make test`.
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./subjects/ -run '^$$' -fuzz FuzzParseSpec -fuzztime $(FUZZTIME)
	$(GO) test ./subjects/ -run '^$$' -fuzz FuzzParseSubjects -fuzztime $(FUZZTIME)
	$(GO) test ./subjects/ -run '^$$' -fuzz FuzzParseRequest -fuzztime $(FUZZTIME)
	$(GO) test ./accounts/ -run '^$$' -fuzz FuzzParseCreds -fuzztime $(FUZZTIME)
	$(GO) test ./secrets/ -run '^$$' -fuzz FuzzMaskerChunks -fuzztime $(FUZZTIME)

vet:
	$(GO) vet $(PKGS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The real nats CLI and nats-server binaries the e2e suite drives.
tools:
	$(GO) install github.com/nats-io/natscli/nats@$(NATS_VERSION)
	$(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

# Static binaries for each platform in dist/<os>-<arch>/ (.exe on Windows).
# On macOS and Windows the agent lacks some of Linux's process control:
# see the README's "Deploy" section.
DIST_PLATFORMS := linux/amd64 linux/arm64 darwin/arm64 windows/amd64
dist:
	@set -e; for p in $(DIST_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; echo "dist/$$os-$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -o dist/$$os-$$arch/ ./cmd/...; \
	done

# What CI runs instead of the whole 'dist', which takes minutes: vet (and so
# compile) the agent for the platforms whose process code differs from
# Linux's.
dist-check:
	@set -e; for p in darwin/arm64 windows/amd64; do \
		echo "vet agent for $$p"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./agent/ ./cmd/agent/; \
	done

clean:
	rm -rf $(BIN) .outpost dist

# Performance: Outpost beside the raw bus and raw exec, in one run of a few
# minutes (see bench/). The table goes to stdout, the JSON to bench/results.
# bench-smoke runs it with small counts; 'make test' runs it too.
.PHONY: bench bench-smoke
bench: build
	$(BIN)/outpost-bench -bin $(BIN) -results bench/results

bench-smoke:
	$(GO) test -count=1 -run '^TestSmoke$$' -v ./bench/
