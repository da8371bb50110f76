#!/usr/bin/env bash
# Make sure the base image the Dockerfiles start FROM exists locally.
#
# Where a registry is reachable this is a plain `docker pull`. Where none is
# (air-gapped build hosts, this project's CI), the image is made from Debian
# packages with debootstrap, from the mirror apt already uses, and tagged with
# the same name, so the Dockerfiles use it unchanged. When the host trusts a
# TLS-intercepting gateway through its CA bundle, that bundle is copied into
# the image and pip is pointed at it, so `pip install` inside builds works.
#
#   docker/make-base-image.sh [IMAGE]      (default debian:bookworm-slim)
set -euo pipefail

image=${1:-debian:bookworm-slim}
suite=${SUITE:-bookworm}
host_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image is present"
    exit 0
fi
if timeout 60 docker pull "$image" >/dev/null 2>&1; then
    echo "pulled base image $image"
    exit 0
fi

command -v debootstrap >/dev/null || { echo "error: no registry reachable and debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /tmp/rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "no registry reachable: building $image with debootstrap from $mirror"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
# The same apt sources as the official image, and no caches.
echo "deb $mirror $suite main" > "$rootfs/etc/apt/sources.list"
echo "deb $mirror $suite-updates main" >> "$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
if [ -s "$host_bundle" ]; then
    mkdir -p "$rootfs/usr/local/share/host-ca"
    cp "$host_bundle" "$rootfs/usr/local/share/host-ca/ca-bundle.crt"
    printf '[global]\ncert = /usr/local/share/host-ca/ca-bundle.crt\n' > "$rootfs/etc/pip.conf"
fi
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
echo "imported $image"
