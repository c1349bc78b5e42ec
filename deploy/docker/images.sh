#!/bin/sh
# Builds heed's container images on this machine, whatever it starts with (`make image` and
# `make image-prometheus` call it):
#   deploy/docker/images.sh heed|prometheus...
# 1. a Docker engine: Debian's docker.io is installed when there is no dockerd, and dockerd is
#    started in the background (log: $DOCKERD_LOG) when the client reaches none;
# 2. the base: $PYTHON_IMAGE when present or pullable, else $DEBIAN_BASE_IMAGE, built once from
#    Debian's packages by debian-base.sh (debootstrap) and reused;
# 3. the images on that base (build argument): heed ($HEED_IMAGE, deploy/docker/Dockerfile, with
#    the prepared models/) and Prometheus from Debian's package ($PROMETHEUS_IMAGE,
#    deploy/prometheus/Dockerfile).
# Builds use the host's network (`--network host`), as do the containers the tests run.
set -eu
cd "$(dirname "$0")/../.."
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
DEBIAN_BASE_IMAGE=${DEBIAN_BASE_IMAGE:-heed-base:bookworm}
HEED_IMAGE=${HEED_IMAGE:-heed:cpu}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-heed-prometheus:debian}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/heed-dockerd.log}
[ "$(id -u)" = 0 ] && SUDO="" || SUDO=sudo

apt_install() {
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

engine() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || apt_install docker.io
  echo "starting dockerd (log: $DOCKERD_LOG)"
  $SUDO sh -c "setsid dockerd >'$DOCKERD_LOG' 2>&1 </dev/null &"
  tries=0
  until docker info >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
      echo "dockerd did not come up in 60 s; the end of $DOCKERD_LOG:" >&2
      tail -20 "$DOCKERD_LOG" >&2
      return 1
    fi
    sleep 1
  done
}

base() {
  if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
    echo "$PYTHON_IMAGE"
    return 0
  fi
  if ! docker image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1; then
    echo "$PYTHON_IMAGE cannot be pulled: building $DEBIAN_BASE_IMAGE from Debian's packages" >&2
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || apt_install debootstrap >&2
    PATH="$PATH:/usr/sbin" $SUDO deploy/docker/debian-base.sh "$DEBIAN_BASE_IMAGE" >&2
  fi
  echo "$DEBIAN_BASE_IMAGE"
}

engine
BASE=$(base)
for image in "$@"; do
  case "$image" in
  heed)
    [ -f models/.ready ] || { echo "models/ is not prepared: run make models" >&2; exit 1; }
    docker build --force-rm --network host --build-arg PYTHON_IMAGE="$BASE" -f deploy/docker/Dockerfile -t "$HEED_IMAGE" .
    ;;
  prometheus)
    docker build --force-rm --network host --build-arg BASE_IMAGE="$BASE" -t "$PROMETHEUS_IMAGE" deploy/prometheus
    ;;
  *)
    echo "unknown image $image (heed or prometheus)" >&2
    exit 2
    ;;
  esac
done
