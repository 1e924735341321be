# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need first (scripts/install-deps.sh).

CARGO ?= cargo

.PHONY: demo test build lint bench soak fmt

demo:
	./scripts/install-deps.sh
	$(CARGO) build --release -p imgate
	./scripts/demo.sh $${CARGO_TARGET_DIR:-$(CURDIR)/target}/release/imgate

# The Python the tests run their independent checkers with: the project
# virtualenv scripts/install-deps.sh --with-python creates (Debian's system
# Python refuses pip installs, PEP 668).
export IMGATE_PYTHON ?= $(or $(IMGATE_VENV),$(CURDIR)/.venv)/bin/python

# IMGATE_BIN: the scenarios (package imgate-tests) run the binary this build
# made; cargo names a binary to integration tests only in its own package, and
# the tests never run cargo themselves. Without it they fail and say so.
test:
	./scripts/install-deps.sh --with-python
	$(CARGO) fmt --all -- --check
	$(CARGO) build --workspace --all-targets
	IMGATE_BIN=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/imgate $(CARGO) test --workspace --no-fail-fast
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p imgate-keys -p imgate-core -p imgate-webhook
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins

build:
	$(CARGO) build --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# docs/performance.md: `make bench BENCH_ARGS=--json`, `make soak SOAK=10m`;
# IMGATE_BIN=/path/to/imgate measures another build.
BENCH_ARGS ?=
SOAK ?= 60s
SOAK_ARGS ?=

bench:
	./scripts/bench.sh $(BENCH_ARGS)

soak:
	./scripts/soak.sh $(SOAK) $(SOAK_ARGS)

fmt:
	$(CARGO) fmt --all
