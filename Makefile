# Carrier Core. `make test` is the one command a fresh Debian machine (or CI)
# needs: it installs the servers the suite runs against, then vets and tests.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO ?= go

# Debian packages of the real servers the tests start privately, and the
# commands that tell whether each is there.
DEB_PACKAGES := clickhouse-server clickhouse-client sip-tester freeradius freeradius-utils kamailio
DEB_COMMANDS := clickhouse-client sipp freeradius radclient kamailio

.PHONY: test deps vet fmt-check build bench

test: deps fmt-check vet
	$(GO) test -count=1 -timeout 20m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt would change these files (run gofmt -w):"; echo "$$unformatted"; exit 1; \
	fi

build:
	$(GO) build -o bin/carrier ./cmd/carrier

bench:
	bash tools/bench/bench.sh

# Installs the packages only when a command is missing, so a set-up machine
# does no apt work at all. The servers' own services are kept from starting
# during the install (policy-rc.d): the tests run private instances on free
# ports, and a container has no init to start them anyway.
deps:
	@export PATH="$$PATH:/usr/sbin:/sbin"; \
	has() { command -v "$$1" >/dev/null; }; \
	missing=""; \
	for c in $(DEB_COMMANDS); do has "$$c" || missing="$$missing $$c"; done; \
	has clickhouse-server || has clickhouse || missing="$$missing clickhouse-server"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "missing:$$missing; installing $(DEB_PACKAGES)"; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
		sudo="sudo"; [ -t 0 ] || sudo="sudo -n"; \
	fi; \
	policy=/usr/sbin/policy-rc.d; \
	if [ ! -e "$$policy" ]; then \
		printf '#!/bin/sh\nexit 101\n' | $$sudo tee "$$policy" >/dev/null; \
		$$sudo chmod 755 "$$policy"; \
		trap '$$sudo rm -f "$$policy"' EXIT; \
	fi; \
	apt=($$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300); \
	"$${apt[@]}" update; \
	if ! "$${apt[@]}" install -y --no-install-recommends $(DEB_PACKAGES); then \
		echo "apt-get install reported an error; finishing configuration and checking the commands"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true; \
	fi; \
	for c in $(DEB_COMMANDS); do has "$$c" || { echo "still missing after install: $$c"; exit 1; }; done; \
	has clickhouse-server || has clickhouse || { echo "still missing after install: clickhouse-server"; exit 1; }
