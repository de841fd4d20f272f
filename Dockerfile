# syntax=docker/dockerfile:1
# upkeep's image: every daemon and upkeepctl in one small runtime image; docker-compose.yml
# runs one container per daemon from it. The backup worker needs pg_dump/pg_restore of the
# server's major version: PG_MAJOR (default 16, the compose stack's server).
#
#   docker build -t upkeep --build-arg UPKEEP_GIT_COMMIT="$(git rev-parse --short HEAD)" .

ARG RUST_VERSION=1.88
ARG PG_MAJOR=16

# ---- build: release binaries ------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
# The build context has no .git; `--version` shows the commit given here (else "unknown").
ARG UPKEEP_GIT_COMMIT=unknown
ENV UPKEEP_GIT_COMMIT=${UPKEEP_GIT_COMMIT}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/upkeep-scheduler target/release/upkeep-api \
          target/release/upkeep-worker-backup target/release/upkeep-worker-logs \
          target/release/upkeep-worker-tokens target/release/upkeep-worker-reports \
          target/release/upkeepctl /out/

# ---- runtime: Debian slim with the PostgreSQL client tools ------------------------------------
FROM debian:bookworm-slim AS runtime
ARG PG_MAJOR
# postgresql-client-${PG_MAJOR} comes from the PostgreSQL project's apt repository (PGDG),
# whose signing key is fetched with the packages' own tools. Versions are not pinned: the
# distribution's security updates should reach the image at each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
    && apt-get purge -y --auto-remove postgresql-common \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 upkeep \
    && useradd --system --uid 10001 --gid upkeep --home-dir /var/lib/upkeep --shell /usr/sbin/nologin upkeep \
    && install -d -o upkeep -g upkeep -m 0750 /var/lib/upkeep /var/lib/upkeep/backups /var/log/upkeep \
    && install -d -m 0755 /etc/upkeep
COPY --from=build /out/ /usr/local/bin/
COPY upkeep.example.toml /etc/upkeep/upkeep.toml
ENV UPKEEP_CONFIG=/etc/upkeep/upkeep.toml \
    UPKEEP_LOG_FORMAT=json \
    UPKEEP_API_ADDR=0.0.0.0:8080 \
    UPKEEP__BACKUPS__PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin
# Numeric, so the host and Kubernetes' runAsNonRoot can check it (the user `upkeep`).
USER 10001:10001
WORKDIR /var/lib/upkeep
EXPOSE 8080
# Exec form: the daemon itself gets SIGTERM (compose adds an init as PID 1 with `init: true`).
STOPSIGNAL SIGTERM
CMD ["upkeep-api"]
