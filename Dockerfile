# A small non-root image of portcullis serving the demo: deploy/docker/portcullis.yaml,
# with the demo policy, in front of the built-in echo upstream.
#   docker build -t portcullis .
#   docker run --rm --read-only -p 8080:8080 -p 127.0.0.1:9090:9090 portcullis
#   curl -i localhost:8080/public/hello     # allowed: the echo answers
#   curl -i localhost:8080/admin/users      # 403 ip_not_allowed, explained
# Mount your own files over /etc/portcullis (deploy/kubernetes/ and deploy/compose/ do).

FROM rust:1.95.0-slim-bookworm AS build
# The toolchain rust-toolchain.toml pins. The file itself stays out: its clippy and
# rustfmt would make rustup download them, and a build needs neither.
ENV RUSTUP_TOOLCHAIN=1.95.0
# jemalloc, the allocator, builds with make, which the slim image lacks.
RUN command -v make >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends make \
        && rm -rf /var/lib/apt/lists/*)
WORKDIR /src
# The dependencies first, in a layer of their own that is built again only when a
# manifest or the lock file changes. Cargo wants every target each manifest declares to
# exist, so each path they list gets an empty stand-in for this step.
COPY Cargo.toml Cargo.lock ./
COPY crates/policy/Cargo.toml crates/policy/
# Patched dependencies (vendor/h2/PATCHES.md) belong to this layer.
COPY vendor ./vendor
RUN for manifest in Cargo.toml crates/*/Cargo.toml; do \
        dir=$(dirname "$manifest"); \
        sed -n 's/^path = "\(.*\)"$/\1/p' "$manifest" | while read -r target; do \
            mkdir -p "$dir/$(dirname "$target")" && echo 'fn main() {}' >"$dir/$target"; \
        done; \
    done \
    && cargo build --release --locked \
    && cargo clean --release --package portcullis --package portcullis-policy
COPY crates ./crates
COPY src ./src
RUN cargo build --release --locked && strip target/release/portcullis

# glibc and libgcc, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY deploy/docker/portcullis.yaml /etc/portcullis/portcullis.yaml
COPY config/policies /etc/portcullis/policies
COPY config/keys/demo-jwks.json /etc/portcullis/keys/demo-jwks.json
USER nonroot:nonroot
EXPOSE 8080 9090
# The image has no curl: the binary asks its own admin listener's /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/portcullis", "healthcheck", "--admin", "127.0.0.1:9090"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["--log-format", "json", "run", "-c", "/etc/portcullis/portcullis.yaml"]
