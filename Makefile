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
# endpoints over loopback HTTP against the baseline and the floor. Needs the
# PostgreSQL of DEPUTY_BENCH_POSTGRES (a fresh schema is made and dropped).
DEPUTY_BENCH_POSTGRES ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
BENCHFLAGS ?=
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/deputy-bench -postgres '$(DEPUTY_BENCH_POSTGRES)' -json-out bench-results.json $(BENCHFLAGS)

integration:
	$(GO) test -count=1 -v ./integration/...

# Every Fuzz* function in a _test.go file, found by grep so that a new target
# is picked up without editing this file, fuzzed one after the other for
# FUZZTIME each; the first crash (a panic, or a target's own failure such as
# a 5xx answer) stops the run with the failing input saved under testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	@targets=$$(grep -rHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(' . | sed -E 's/:func (Fuzz[A-Za-z0-9_]+)\($$/:\1/' | sort -u); \
	[ -n "$$targets" ] || { echo "make fuzz: no fuzz targets found" >&2; exit 1; }; \
	for hit in $$targets; do \
		dir=$$(dirname "$${hit%%:*}"); name="$${hit##*:}"; \
		echo "== $$name ($$dir) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$dir" || exit 1; \
	done
