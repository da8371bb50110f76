#!/usr/bin/env bash
# Make sure the base image the Dockerfiles start FROM exists locally, and say
# which reference the builds should use.
#
# IMAGE is pinned by digest (NAME:TAG@sha256:...). Where a registry is
# reachable, that exact image is pulled and the builds use it. Where none is
# (air-gapped build hosts, this project's CI), a stand-in is made from Debian
# packages with debootstrap, from the mirror apt already uses, and tagged
# NAME:TAG and labelled dogbreed.base.stand-in: the builds use that, the
# images built on it inherit the label, and make push warns about them.
#
# The host's CA bundle is copied beside REF_FILE (build-ca/ca-bundle.crt), where
# only the Dockerfiles' build stages read it, for pip's downloads: some build
# hosts reach the package registries through a TLS-intercepting gateway that
# their CA bundle trusts. Nothing of it reaches an image that is pushed.
#
#   docker/make-base-image.sh IMAGE [REF_FILE]
# REF_FILE receives the reference to build FROM (also printed last).
set -euo pipefail

image=${1:?usage: make-base-image.sh IMAGE [REF_FILE]}
ref_file=${2:-}
name=${image%@*}  # without the digest
suite=${SUITE:-bookworm}
host_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

use() {
    if [ -n "$ref_file" ]; then
        mkdir -p "$(dirname "$ref_file")/build-ca"
        echo "$1" > "$ref_file"
        if [ -s "$host_bundle" ]; then
            cp "$host_bundle" "$(dirname "$ref_file")/build-ca/ca-bundle.crt"
            chmod 644 "$(dirname "$ref_file")/build-ca/ca-bundle.crt"
        fi
    fi
    echo "$1"
    exit 0
}
stand_in_label() {
    docker image inspect --format '{{index .Config.Labels "dogbreed.base.stand-in"}}' "$1" 2>/dev/null || true
}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image is present"
    use "$image"
fi
if timeout 60 docker pull "$image" >/dev/null 2>&1; then
    echo "pulled base image $image"
    use "$image"
fi
if [ "$name" != "$image" ] && docker image inspect "$name" >/dev/null 2>&1; then
    if [ -n "$(stand_in_label "$name")" ]; then
        echo "warning: building on $name, a stand-in made with debootstrap, not the pinned $image" >&2
        use "$name"
    fi
    pulled=$(docker image inspect --format '{{len .RepoDigests}}' "$name")
    if [ "$pulled" != 0 ]; then
        echo "warning: cannot pull $image; building on the local $name instead, which may not be the pinned image" >&2
        use "$name"
    fi
    # Neither pulled nor an unmodified stand-in of this script's (an older one carried the host's CA and pip
    # settings): made again below.
fi

command -v debootstrap >/dev/null || { echo "error: no registry reachable and debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /tmp/rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "no registry reachable: building a stand-in for $image with debootstrap from $mirror, tagged $name" >&2
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
# The same apt sources as the official image, and no caches.
echo "deb $mirror $suite main" > "$rootfs/etc/apt/sources.list"
echo "deb $mirror $suite-updates main" >> "$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | docker import \
    --change "LABEL dogbreed.base.stand-in=\"debootstrap $suite from $mirror, $(date -u +%Y-%m-%d), not $image\"" \
    - "$name" >/dev/null
echo "warning: building on $name, a stand-in made with debootstrap, not the pinned $image" >&2
use "$name"
