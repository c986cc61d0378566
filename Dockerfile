# The mcpgate container image.
#
#   docker build -t mcpgate .
#   docker run -d --name mcpgate -p 3000:3000 \
#     -v "$PWD/mcpgate.toml:/etc/mcpgate/mcpgate.toml:ro" mcpgate
#
# Inside the container the gateway listens on 0.0.0.0:3000 (CMD below) so that
# the published port reaches it. mcpgate refuses a non-loopback address unless
# the config has `[gateway] api_keys` (clients send `Authorization: Bearer <key>`)
# or `allow_unauthenticated = true` (only when something in front of it
# authenticates callers): without either the container exits at once, saying so.
#
# The image holds mcpgate alone. Backends run inside the container, so their
# runtimes (node/npx, python/uvx...) go into an image built FROM this one, e.g.
#   FROM mcpgate
#   USER root
#   RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
#    && rm -rf /var/lib/apt/lists/*
#   USER mcpgate

# ---- build: the stable toolchain, the locked dependency versions ----------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts (BuildKit, Docker's default builder) keep the registry and
# the build directory between builds; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mcpgate \
 && install -D -m 0755 target/release/mcpgate /out/mcpgate

# ---- runtime: the same Debian release as the build stage (glibc) ---------
FROM debian:bookworm-slim
# tini is PID 1: it forwards SIGTERM to mcpgate (which shuts down gracefully)
# and reaps any orphan that escapes a backend's supervisor. curl serves the
# HEALTHCHECK; ca-certificates serves backends that call HTTPS APIs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/*
# A dedicated non-root user; its HOME is where backends keep their caches.
RUN groupadd --system --gid 10001 mcpgate \
 && useradd --system --uid 10001 --gid mcpgate --home-dir /var/lib/mcpgate \
      --create-home --shell /usr/sbin/nologin mcpgate \
 && install -d -m 0755 /etc/mcpgate
COPY --from=build /out/mcpgate /usr/local/bin/mcpgate
USER 10001:10001
WORKDIR /var/lib/mcpgate
ENV HOME=/var/lib/mcpgate \
    RUST_LOG=info
EXPOSE 3000
# /healthz answers 200 while the gateway serves (no API key needed). With
# tls_cert/tls_key set, use `curl -fsSk https://127.0.0.1:3000/healthz`.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mcpgate"]
CMD ["--config", "/etc/mcpgate/mcpgate.toml", "--listen", "0.0.0.0:3000"]
