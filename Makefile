# Outpost. `make run` starts a coordinator with an embedded NATS server and a
# local agent; `make test` runs every test, the e2e suite included.
GO      ?= go
BIN     := bin
PKGS    := ./...
NATS_VERSION        := v0.5.1
NATS_SERVER_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)

.PHONY: all build run test unit e2e fuzz vet fmt tools clean soak

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

vet:
	$(GO) vet $(PKGS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The real nats CLI and nats-server binaries the e2e suite drives.
tools:
	$(GO) install github.com/nats-io/natscli/nats@$(NATS_VERSION)
	$(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

clean:
	rm -rf $(BIN) .outpost
