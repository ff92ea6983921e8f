# syntax=docker/dockerfile:1
# Leasehold in a container: `docker build -t leasehold .`, then
#   docker run -d --name leasehold -p 8080:8080 -v leasehold-data:/var/lib/leasehold leasehold
# The SQLite database and the master key live in the volume at /var/lib/leasehold.

# --- build -------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and the target directory are BuildKit cache mounts: a rebuild after a
# source change recompiles only the workspace's own crates, not the dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leasehold \
    && install -m 0755 target/release/leasehold /usr/local/bin/leasehold

# --- run ---------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to SMTP servers, webhook receivers and PostgreSQL.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 leasehold \
    && useradd --system --uid 10001 --gid leasehold --home-dir /var/lib/leasehold \
        --shell /usr/sbin/nologin leasehold \
    && install -d -m 0700 -o leasehold -g leasehold /var/lib/leasehold
COPY --from=build /usr/local/bin/leasehold /usr/local/bin/leasehold

ENV LEASEHOLD_DATA_DIR=/var/lib/leasehold \
    LEASEHOLD_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/leasehold"]
WORKDIR /var/lib/leasehold
USER 10001:10001
EXPOSE 8080

# Ready when /readyz answers 200 (the store answers). The slim image has no curl: bash
# sends the request over /dev/tcp to the port of LEASEHOLD_LISTEN on 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${LEASEHOLD_LISTEN##*:}\" && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]

ENTRYPOINT ["leasehold"]
CMD ["serve"]
