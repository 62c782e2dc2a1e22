# deputy — the two commands a newcomer needs are `make run` and `make test`.

GO ?= go
# Tests use this PostgreSQL when it answers; CI also sets DEPUTY_REQUIRE_POSTGRES=1
# so that a missing server fails instead of skipping.
DEPUTY_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export DEPUTY_TEST_DATABASE_URL

.PHONY: run test lint bench integration fuzz build

run:
	$(GO) run ./cmd/deputy-idp

build:
	$(GO) build -o bin/deputy-idp ./cmd/deputy-idp

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

# Go benchmarks (middleware verification, …), then the load generator: token
# endpoints over loopback HTTP — deputy mounted in-process (plugin cells) and
# the deputy-idp binary, built into a temporary directory and started with
# `serve` in its own process (deputy-idp cells) — against the baseline and
# the floor, and Ory Hydra in its default configuration (built from
# cmd/deputy-bench/hydra/go.mod; its first build downloads its modules). Needs
# the PostgreSQL of DEPUTY_BENCH_POSTGRES (fresh schemas, and a database for
# Hydra, are made and dropped). BENCHFLAGS narrows it, e.g. BENCHFLAGS='-cells idp-cc-postgres,cc-postgres -clients 8'.
DEPUTY_BENCH_POSTGRES ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
BENCHFLAGS ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/deputy-bench -postgres '$(DEPUTY_BENCH_POSTGRES)' -json-out bench-results.json $(BENCHFLAGS)

# The end-to-end tests against a running stack (`docker compose up --build -d`
# first): the IdP at DEPUTY_URL, its database for the admin CLI and for the
# attack that needs the signing key, its system secret. The defaults are
# docker-compose.yml's. Without DEPUTY_URL, `make test` runs the same tests
# against servers it starts itself.
INTEGRATION_URL ?= http://localhost:8080
INTEGRATION_DATABASE_URL ?= postgres://deputy:deputy@127.0.0.1:5433/deputy?sslmode=disable
INTEGRATION_SYSTEM_SECRET ?= demo-only-system-secret-0123456789abcdef
integration:
	DEPUTY_URL='$(INTEGRATION_URL)' DEPUTY_DATABASE_URL='$(INTEGRATION_DATABASE_URL)' \
	DEPUTY_SYSTEM_SECRET='$(INTEGRATION_SYSTEM_SECRET)' $(GO) test -count=1 -v ./integration/...

# Every Fuzz* function in a _test.go file, found by grep so that a new target
# is picked up without editing this file, fuzzed one after the other for
# FUZZTIME each; the first crash (a panic, or a target's own failure such as
# a 5xx answer) stops the run with the failing input saved under testdata/fuzz.
#
# Go before 1.27 can fail a clean run at the -fuzztime boundary with a bare
# "context deadline exceeded" (golang/go#75804: the coordinator's deadline
# races its workers, more so on a loaded machine). Such a failure writes no
# input, so a failed run that wrote none and says only that is reported and
# counted clean; any other failure, or a new file under testdata/fuzz, fails.
FUZZTIME ?= 30s
fuzz:
	@targets=$$(grep -rHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(' . | sed -E 's/:func (Fuzz[A-Za-z0-9_]+)\($$/:\1/' | sort -u); \
	[ -n "$$targets" ] || { echo "make fuzz: no fuzz targets found" >&2; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for hit in $$targets; do \
		dir=$$(dirname "$${hit%%:*}"); name="$${hit##*:}"; corpus="$$dir/testdata/fuzz/$$name"; \
		echo "== $$name ($$dir) for $(FUZZTIME)"; \
		ls "$$corpus" 2>/dev/null | sort > "$$tmp/before"; \
		{ $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$dir"; echo $$? > "$$tmp/rc"; } 2>&1 | tee "$$tmp/log"; \
		[ "$$(cat "$$tmp/rc")" = 0 ] && continue; \
		ls "$$corpus" 2>/dev/null | sort > "$$tmp/after"; \
		if cmp -s "$$tmp/before" "$$tmp/after" && ! grep -q 'Failing input written' "$$tmp/log" && \
			[ "$$(grep -A1 -- '^--- FAIL' "$$tmp/log" | sed 1d | tr -d ' ')" = "contextdeadlineexceeded" ]; then \
			echo "make fuzz: $$name: no failing input; the run ended on Go's fuzztime deadline race (golang/go#75804), counted clean"; \
			continue; \
		fi; \
		exit 1; \
	done
