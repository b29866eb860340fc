# syntax=docker/dockerfile:1
# The `strata` server, built once from this repository on Debian and run as an unprivileged
# user. Outside its container it is reached on 2113, so it listens on 0.0.0.0, which Strata
# allows only with API tokens:
#
#   docker build -t strata .
#   strata token new --name ops --role admin      # paste its [[tokens]] entry into strata.toml
#   docker run --rm -p 2113:2113 -v strata-data:/var/lib/strata \
#     -v "$PWD/strata.toml:/etc/strata/strata.toml:ro" strata
#
# The store lives in the volume: events in /var/lib/strata/data, the hosted projections'
# read models next to it. `docker run … strata --server http://host:2113 --token … read '$all'`
# runs the client commands from the same image.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are build caches (BuildKit): a rebuild after a change
# compiles what changed, not every dependency again. The binary is copied out of the cache
# in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strata \
 && install -D target/release/strata /out/strata

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/strata --create-home strata
COPY --from=build /out/strata /usr/local/bin/strata
USER strata
WORKDIR /var/lib/strata
VOLUME ["/var/lib/strata"]
# Read by `strata serve` only; the client commands take --server instead.
ENV STRATA_LISTEN=0.0.0.0:2113 \
    STRATA_CONFIG=/etc/strata/strata.toml
EXPOSE 2113
# /health needs no token and answers while the process is up; over HTTPS when strata.toml
# configures TLS (-k: the certificate names the public host, not 127.0.0.1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:2113/health || curl -fsSk https://127.0.0.1:2113/health
ENTRYPOINT ["strata"]
CMD ["serve", "--data", "/var/lib/strata/data"]
