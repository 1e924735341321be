# syntax=docker/dockerfile:1
#
# imgate's container image: a static (musl) binary FROM scratch with the
# root filesystem of scripts/image/rootfs.sh (CA certificates, /etc/passwd
# and /etc/group for the non-root user 65532, /tmp), no shell, no package
# manager. scripts/build-image.sh builds the same layout with buildah and a
# static glibc binary, without Docker; tests/tests/scenarios/image.rs keeps
# the two in step (labels, user, entrypoint, ports, files).
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg IMGATE_REVISION="$(git rev-parse HEAD)" \
#     -t registry.example.com/imgate/imgate:0.1.0 --push \
#     --metadata-file metadata.json .
#
# The build stage runs on the build machine's own platform and cross-compiles
# for the target (no QEMU: a Rust build under emulation takes an hour):
#   arm64: clang + rust-lld; ring, the only C dependency on this target,
#          builds for aarch64-unknown-linux-musl without a musl sysroot
#          under clang (mimalloc would need one: cli/Cargo.toml leaves it
#          out here, so this image uses musl's allocator).
#   amd64: musl-gcc from Debian's musl-tools builds ring and mimalloc
#          (needs an amd64 build machine, as GitHub's and most CI runners are).
# docs/building-imgate-image.md has the whole build, push and sign flow.

ARG RUST_VERSION=1

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH (amd64, arm64)" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=clang \
    AR_aarch64_unknown_linux_musl=llvm-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-self-contained=yes"
# Profile `image` (Cargo.toml): the release profile's code (thin LTO, one
# codegen unit; what docs/performance.md measures), stripped of symbols.
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=imgate-target-${TARGETARCH} \
    target="$(cat /rust-target)" \
 && cargo build --profile image --locked -p imgate --target "$target" \
 && scripts/image/rootfs.sh /rootfs "target/$target/image/imgate"

FROM scratch
# Source and version: pass the release's (the release workflow does).
ARG IMGATE_VERSION=0.1.0
ARG IMGATE_REVISION=unknown
ARG IMGATE_SOURCE=https://example.invalid/imgate
LABEL org.opencontainers.image.title="imgate" \
      org.opencontainers.image.description="Supply-chain gate for container images: cosign-compatible signing, verification, digest pinning and a Kubernetes admission webhook" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${IMGATE_VERSION}" \
      org.opencontainers.image.revision="${IMGATE_REVISION}" \
      org.opencontainers.image.source="${IMGATE_SOURCE}"
COPY --from=build /rootfs/ /
# The rootfs's nonroot user; deploy/ requires runAsUser 65532.
USER 65532:65532
# 8443: admission webhook (HTTPS); 9090: /healthz, /readyz, /metrics.
EXPOSE 8443 9090
ENTRYPOINT ["/imgate"]
CMD ["webhook"]
