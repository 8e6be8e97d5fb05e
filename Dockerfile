# syntax=docker/dockerfile:1
# dwh: one static-ish binary on a distroless runtime (glibc, libgcc, libssl3, CA certificates).
#
#   docker build -t registry.example.com/dwh:0.1.0 .
#
# Stages: chef (toolchain + cargo-chef) → planner (the dependency recipe) → builder (dependencies
# cooked in their own layer, cached until Cargo.toml/Cargo.lock change; then the sources) →
# runtime (the one binary, non-root, no shell; runs with a read-only root filesystem).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
# The rust image (buildpack-deps) has what librdkafka's build needs: gcc, g++, make,
# pkg-config, libssl-dev and zlib1g-dev.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package dwh --bin dwh
COPY . .
RUN cargo build --release --locked --package dwh --bin dwh \
    && strip target/release/dwh

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /src/target/release/dwh /usr/local/bin/dwh
# distroless "nonroot" is uid/gid 65532; the manifests run it with readOnlyRootFilesystem.
USER 65532:65532
ENV DWH_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/dwh"]
CMD ["--help"]
