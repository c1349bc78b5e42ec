#!/bin/sh
# A stand-in for python:3.11-slim-bookworm built from Debian's own packages, for machines that
# reach Debian's archive but no container registry: debootstrap a minimal bookworm, give it
# Python 3.11 as `python` and `pip` (a virtual environment on PATH, since Debian's own Python is
# externally managed), and import the root filesystem as an image. The image trusts the
# certificate authorities this machine trusts (its CA bundle is copied in, and pip is pointed at
# it with PIP_CERT), so that pip in a build reaches PyPI as it does here, through whatever TLS
# proxy this machine's bundle vouches for. Needs root and debootstrap.
#   deploy/docker/debian-base.sh [TAG]        (default heed-base:bookworm)
set -eu
tag=${1:-heed-base:bookworm}

# The Debian archive this machine's own packages come from (its apt sources: the deb822 entry for
# bookworm itself, not -updates or -security, else the one-line format), unless DEBIAN_MIRROR names one.
host_mirror() {
  for sources in /etc/apt/sources.list.d/*.sources; do
    [ -f "$sources" ] || continue
    found=$(awk 'BEGIN { RS = "" } /Suites:[^\n]*bookworm( |\n|$)/ { for (i = 1; i < NF; i++) if ($i == "URIs:") { print $(i + 1); exit } }' "$sources")
    [ -n "$found" ] && { echo "$found"; return 0; }
  done
  [ -f /etc/apt/sources.list ] && awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list || true
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}
if [ -z "$mirror" ]; then
  echo "no Debian bookworm archive in this machine's apt sources: set DEBIAN_MIRROR" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
chroot "$root" python3 -m venv /opt/python
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python"]' \
  --message "Debian bookworm (debootstrap from $mirror) with Python 3.11 on PATH" \
  - "$tag"
