#!/usr/bin/env bash
# A Docker engine on this offline machine, for tests that build and run the project's image for real.
# (The project's copy of the machine's shared tool, so that a clean clone's CI can start the engine.)
#
# - installs Debian's docker.io and debootstrap when dockerd is missing;
# - starts dockerd on its own socket with no bridge network: containers run with `--network host` and
#   reach the services of this machine on 127.0.0.1 (PostgreSQL, a local HTTP mirror, the emulators);
# - Docker Hub is out of reach, so it builds local stand-ins for the base images a Dockerfile names:
#   `debian:bookworm-slim` from Debian's own packages (debootstrap), and `python:3.11-slim-bookworm` on it
#   (Debian's Python 3.11 as a venv in /usr/local, so `pip`, `python` and `/usr/local/bin` behave as in the
#   official image, with this machine's CA bundle so pip reaches the package index). A machine that reaches
#   Docker Hub needs none of this: use its own Docker, and the Dockerfile gets the official images.
#
# Usage:  eval "$(bash scripts/docker-offline.sh)"    # sets DOCKER_HOST for this shell (.ci/run does this)
# It is idempotent: a second call finds the engine and the images and returns at once.
# Stop the engine:  kill "$(cat /tmp/docker-offline/dockerd.pid)"
set -euo pipefail
RUN=/tmp/docker-offline
ROOT=${DOCKER_OFFLINE_ROOT:-/var/lib/docker-offline}
SOCK="$RUN/docker.sock"
export DOCKER_HOST="unix://$SOCK"
mkdir -p "$RUN" "$ROOT"
say() { echo "docker-offline: $*" >&2; }

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  say "installing docker.io and debootstrap (Debian packages)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
# The docker client: the one Debian ships, or whatever `docker` is on the PATH.
DOCKER=$(command -v /usr/bin/docker || command -v docker)

if ! "$DOCKER" info >/dev/null 2>&1; then
  say "starting dockerd (log: $RUN/dockerd.log)"
  (setsid dockerd --host "$DOCKER_HOST" --data-root "$ROOT/data" --exec-root "$RUN/exec" \
     --pidfile "$RUN/dockerd.pid" --bridge=none --iptables=false --ip-masq=false \
     >"$RUN/dockerd.log" 2>&1 &)
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || { say "dockerd did not start; see $RUN/dockerd.log"; tail -5 "$RUN/dockerd.log" >&2; exit 1; }
fi

if ! "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  say "building debian:bookworm-slim from Debian's packages (a few minutes)"
  rm -rf "$ROOT/rootfs"
  debootstrap --variant=minbase bookworm "$ROOT/rootfs" "$mirror" >"$RUN/debootstrap.log" 2>&1 \
    || { say "debootstrap failed; see $RUN/debootstrap.log"; exit 1; }
  tar -C "$ROOT/rootfs" -c . | "$DOCKER" import - debian:bookworm-slim >/dev/null
  rm -rf "$ROOT/rootfs"
fi

if ! "$DOCKER" image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
  say "building python:3.11-slim-bookworm on it"
  ctx=$(mktemp -d)
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca.crt"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /usr/local && ln -sf /usr/local/bin/python3 /usr/local/bin/python
COPY ca.crt /etc/ssl/certs/ca-certificates.crt
RUN printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
ENV PATH=/usr/local/bin:$PATH
CMD ["python3"]
DOCKERFILE
  "$DOCKER" build --quiet --network host -t python:3.11-slim-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
fi

echo "export DOCKER_HOST=$DOCKER_HOST"
