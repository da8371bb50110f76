#!/usr/bin/env bash
# Install and start what the make targets need from the system, on Debian or Ubuntu, and say why.
#
#   scripts/system.sh [python] [java] [docker] [test]
#
#   python  the venv module for Python 3.11 (Debian ships it apart: python3-venv)
#   java    a Java 17 JDK: MMS's front end is Java, and javac compiles its guard (make venv)
#   docker  the Docker engine, started when none runs (the images, SageMaker local mode); compose (local mode
#           starts its containers with it); debootstrap, only when no registry answers and the base image is
#           missing (make base-image then builds a stand-in)
#   test    all of the above, plus curl (the README's calls) and docker-registry (the push test)
#
# With nothing to do it says nothing and takes well under a second. It installs as root, or through sudo
# when that needs no password; otherwise, and on another OS, it stops with one line naming the command to run.
set -euo pipefail

parts=" ${*:-python java docker} "
[[ "$parts" == *" test "* ]] && parts=" python java docker test "
base_image=${BASE_IMAGE:-}

packages=()
add() { packages+=("$1"); echo "system: needs $1: $2"; }
missing() { ! command -v "$1" >/dev/null 2>&1; }

need_python() {
    local python=${PYTHON:-python3.11}
    missing "$python" && return  # make venv names the interpreter it needs
    "$python" -c 'import ensurepip' >/dev/null 2>&1 || add python3-venv "the venv module for $python (make venv)"
}

need_java() {
    missing javac && add openjdk-17-jdk-headless "MMS's front end runs on Java 17, and javac compiles its guard"
    return 0
}

need_docker() {
    missing dockerd && add docker.io "the Docker engine: the images, SageMaker local mode, the container tests"
    if missing docker-compose && ! docker compose version >/dev/null 2>&1; then
        add docker-compose "SageMaker local mode starts its containers with compose"
    fi
    return 0
}

need_test() {
    missing curl && add curl "the README's calls to a local server"
    missing docker-registry && add docker-registry "a registry on 127.0.0.1 for the push test"
    return 0
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        echo "system: error: root is needed; run: sudo $*" >&2
        exit 1
    fi
}

install() {
    [ ${#packages[@]} -gt 0 ] || return 0
    if ! grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release 2>/dev/null; then
        echo "system: error: not Debian or Ubuntu; install ${packages[*]} (or their equivalents) yourself" >&2
        exit 1
    fi
    local command="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${packages[*]}"
    if [ "$(id -u)" != 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        echo "system: error: root is needed to install ${packages[*]}; run: sudo sh -c '$command'" >&2
        exit 1
    fi
    echo "system: installing ${packages[*]}"
    as_root sh -c "$command" >/dev/null
    packages=()
}

start_docker() {
    docker info >/dev/null 2>&1 && return 0
    echo "system: starting the Docker engine"
    if [ -d /run/systemd/system ]; then
        as_root systemctl start docker
    else
        as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "system: error: the Docker engine did not start (see /var/log/dockerd.log, or run: sudo dockerd)" >&2
    exit 1
}

need_debootstrap() {
    missing debootstrap || return 0
    [ -n "$base_image" ] && docker image inspect "$base_image" >/dev/null 2>&1 && return 0
    [ -n "$base_image" ] && docker image inspect "${base_image%@*}" >/dev/null 2>&1 && return 0
    # Any answer, 401 included, means a registry is reachable and make base-image pulls the pinned base.
    curl -s -o /dev/null -m 10 https://registry-1.docker.io/v2/ 2>/dev/null && return 0
    add debootstrap "no registry answers, so make base-image builds a stand-in base image from Debian packages"
}

[[ "$parts" == *" python "* ]] && need_python
[[ "$parts" == *" java "* ]] && need_java
[[ "$parts" == *" docker "* ]] && need_docker
[[ "$parts" == *" test "* ]] && need_test
install
if [[ "$parts" == *" docker "* ]]; then
    start_docker
    need_debootstrap
    install
fi
