# delivery-hook: the static binary on a Debian base, with the docker CLI and
# the compose v2 plugin.
#
#   docker build -t delivery-hook .
#
# Every upstream image is a build argument, so a host that cannot pull them
# builds from local stand-ins (scripts/build-image --stand-ins does, with the
# binary cargo built: --target prebuilt).
#
# The image starts as root and `serve` becomes the user `delivery`
# (DELIVERY_RUN_AS) with the Docker socket's group before it reads any
# input, so the seed tool's compose example (no `user`, no `group_add`)
# works; started as `delivery` with `group_add`, nothing changes.

ARG RUST_IMAGE=rust:1-bookworm
ARG DOCKER_CLI_IMAGE=docker:28-cli
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${DOCKER_CLI_IMAGE} AS docker-cli

# Everything the image is but the binary: both ways of building it share it.
FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system delivery \
 && useradd --system --gid delivery --home-dir /home/delivery --create-home \
      --shell /usr/sbin/nologin delivery \
 && mkdir -p /var/lib/delivery-hook /home/delivery/.docker \
 && chown delivery:delivery /var/lib/delivery-hook /home/delivery/.docker
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-cli /usr/local/libexec/docker/cli-plugins/docker-compose \
     /usr/local/libexec/docker/cli-plugins/docker-compose
COPY --from=docker-cli /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
WORKDIR /var/lib/delivery-hook
ENV DELIVERY_RUN_AS=delivery \
    DELIVERY_STATE_DIR=/var/lib/delivery-hook \
    DELIVERY_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["delivery-hook", "healthcheck"]
ENTRYPOINT ["delivery-hook"]
CMD ["serve"]

# `--target prebuilt`: a binary cargo built beside this file (BINARY, by
# default the static one the build stage below makes), in place of that
# stage, which a build that stops here never reaches, whichever builder
# runs it.
FROM runtime AS prebuilt
ARG BINARY=target/x86_64-unknown-linux-musl/release/delivery-hook
COPY ${BINARY} /usr/local/bin/delivery-hook

FROM ${RUST_IMAGE} AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin delivery-hook

# The published image (BuildKit, Docker's builder since 23.0, skips the
# `prebuilt` stage it does not need).
FROM runtime
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/delivery-hook /usr/local/bin/delivery-hook
