# delivery-hook: a static binary on the official docker CLI image, which
# carries the docker CLI with the compose (and buildx) plugins.
#
#   docker build -t delivery-hook .
#
# The image runs as the unprivileged user `delivery`; give it the Docker
# socket's group with `group_add`. Started with `user: root` instead (the seed
# tool's compose example, which has no group_add), `serve` joins the socket's
# group and becomes `delivery` itself (DELIVERY_RUN_AS) before anything else
# runs. See the README's "Container image".

FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin delivery-hook

FROM docker:28-cli
RUN addgroup -S delivery \
 && adduser -S -D -G delivery -h /home/delivery delivery \
 && mkdir -p /var/lib/delivery-hook /home/delivery/.docker \
 && chown -R delivery:delivery /var/lib/delivery-hook /home/delivery
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/delivery-hook /usr/local/bin/delivery-hook
WORKDIR /var/lib/delivery-hook
ENV DELIVERY_RUN_AS=delivery \
    DELIVERY_STATE_DIR=/var/lib/delivery-hook \
    DELIVERY_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD wget -q -O /dev/null "http://127.0.0.1:${UVICORN_PORT:-8000}/healthz" || exit 1
ENTRYPOINT ["delivery-hook"]
CMD ["serve"]
USER delivery
