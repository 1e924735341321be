# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need first (scripts/install-deps.sh).

CARGO ?= cargo

.PHONY: demo test build lint bench soak fmt image static

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
# IMGATE_STATIC_BIN: the static binary imgate's image ships, which the image
# scenario builds the image around (scripts/build-static.sh prints its path).
test:
	./scripts/install-deps.sh --with-python
	$(CARGO) fmt --all -- --check
	$(CARGO) build --workspace --all-targets
	./scripts/build-static.sh > $(STATIC_BIN_FILE)
	IMGATE_BIN=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/imgate \
	  IMGATE_STATIC_BIN=$$(cat $(STATIC_BIN_FILE)) \
	  $(CARGO) test --workspace --no-fail-fast
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p imgate-keys -p imgate-sigstore -p imgate-core -p imgate-webhook
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins

build:
	$(CARGO) build --workspace

# Where `make test` notes the static binary's path (in the target dir, which
# holds the binary too).
STATIC_BIN_FILE = $${CARGO_TARGET_DIR:-$(CURDIR)/target}/static-bin-path

# imgate's own container image, FROM scratch with buildah, pushed to IMAGE:
#   make image IMAGE=registry.example.com/platform/imgate:0.1.0 \
#     IMAGE_ARGS="--authfile ~/.docker/config.json"
# docs/building-imgate-image.md; scripts/build-image.sh --help has the options.
IMAGE ?=
IMAGE_ARGS ?=
image:
	@test -n "$(IMAGE)" || { echo "make image IMAGE=REGISTRY/REPO:TAG" >&2; exit 2; }
	./scripts/install-deps.sh
	./scripts/build-image.sh $(IMAGE_ARGS) $(IMAGE)

# The static binary alone (its path on stdout).
static:
	@./scripts/build-static.sh

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
