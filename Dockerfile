# A small non-root image of portcullis serving deploy/docker/portcullis.yaml.
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9090:9090 portcullis
# Mount your own config over /etc/portcullis/portcullis.yaml (see deploy/kubernetes/).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY deploy/docker/portcullis.yaml /etc/portcullis/portcullis.yaml
COPY config/policies /etc/portcullis/policies
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["--log-format", "json", "run", "-c", "/etc/portcullis/portcullis.yaml"]
