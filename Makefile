# caw: the host CLI `caw` and the container init `caw-init`.
GO       ?= go
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
GOFLAGS_STATIC = -trimpath -ldflags='-s -w'
# caw-init is entered through its entry hook, which records the signal
# configuration its caller set before the Go runtime changes it (see
# internal/initbuild; the Dockerfile and the README use the same flags).
INIT_LDFLAGS = -s -w -E=github.com/caw-dev/caw/init/pid1.rt0

.PHONY: mutate all build install demo test bench fuzz vet clean

all: build

# Static binaries into ./bin (caw-init must be static: it runs FROM scratch).
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_STATIC) -o bin/ ./cmd/caw
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(INIT_LDFLAGS)' -o bin/ ./cmd/caw-init

install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 bin/caw bin/caw-init $(DESTDIR)$(BINDIR)/

# The main job on a throwaway home: installs both binaries, then runs the demo.
demo: install
	./scripts/deps.sh
	$(GO) run ./demo

# Every test: unit, namespaces, Docker end to end, bounded torture. Needs root and Docker.
# -p 1: one package at a time, so timing-sensitive sync tests do not share two
# cores with the Docker builds and the torture suite (about 4 minutes warm).
test:
	./scripts/deps.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 60m ./...
	# The concurrent refreshes in their burst form: four writes per side at
	# the same instants, racing the guard's own writes.
	CAW_TORTURE_BURST=4 CAW_TORTURE_SPACING=0 $(GO) test -count=1 -run TestConcurrentRefreshes ./torture

# Mutants of the sync decision and its write paths, each against the package
# tests (needs root): every one must be killed.
mutate:
	./scripts/mutate.sh

bench: build
	$(GO) run ./bench

vet:
	$(GO) vet ./...
	test -z "$$(gofmt -l .)"

clean:
	rm -rf bin
