#!/usr/bin/env bash
# Make the test bed ready: a running Docker engine, a local Debian base image and the
# "gaming PC" test host image. Idempotent, and quick when everything is already there.
#
# Engine: use a running one; else start dockerd; else (root on Debian) install docker.io.
# Base:   use debian:bookworm-slim if present or pullable; else build one offline with
#         debootstrap from the Debian mirror apt is already configured with.
#
# GT_REMOTE_TESTBED=demo (`make demo`): only what the demo uses, the engine and the images. The
# demo drives gt-remote alone (asyncssh, in Python), so none of the laptop programs the tests
# drive (ensure_host_tools: rsync, fish, zsh, MariaDB...) is installed. Unset or `full`: all.
set -euo pipefail

mode=${GT_REMOTE_TESTBED:-full}
case "$mode" in
    full|demo) ;;
    *) printf 'testbed: error: GT_REMOTE_TESTBED=%s is not a mode; use full (the default, for make test) or demo (for make demo)\n' "$mode" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
base_tag=${GT_REMOTE_BASE_TAG:-gt-remote-base:bookworm}
test_tag=${GT_REMOTE_TEST_IMAGE:-gt-remote-testhost:latest}
upstream_base=${GT_REMOTE_UPSTREAM_BASE:-debian:bookworm-slim}
dockerd_log=${GT_REMOTE_DOCKERD_LOG:-/var/log/gt-remote-dockerd.log}
export DOCKER_BUILDKIT=0   # the legacy builder needs no buildx plugin and no registry

say() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

wait_for_engine() {
    local deadline=$((SECONDS + 60))
    until engine_answers; do
        ((SECONDS < deadline)) || die "dockerd did not answer within 60 s; see $dockerd_log"
        sleep 0.5
    done
}

install_docker() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || die "no Docker engine: install Docker (Debian: 'apt-get install docker.io') and start dockerd, then run again"
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1
}

ensure_engine() {
    engine_answers && return
    command -v dockerd >/dev/null || install_docker
    [ "$(id -u)" = 0 ] || die "dockerd is installed but not running, and starting it needs root: start the Docker service, then run again"
    say "starting dockerd (log: $dockerd_log)"
    mkdir -p "$(dirname "$dockerd_log")"
    setsid nohup dockerd >>"$dockerd_log" 2>&1 </dev/null &
    wait_for_engine
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror apt on this machine already uses, so no host name is written down here.
debian_mirror() {
    if [ -n "${GT_REMOTE_DEBIAN_MIRROR:-}" ]; then echo "$GT_REMOTE_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || die "no Debian mirror found in apt's sources: set GT_REMOTE_DEBIAN_MIRROR=<url>"
    echo "$uri"
}

build_offline_base() {
    command -v debootstrap >/dev/null || {
        [ "$(id -u)" = 0 ] || die "debootstrap is missing: install it (apt-get install debootstrap), then run again"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1
    }
    local root mirror
    mirror=$(debian_mirror)
    root=$(mktemp -d /tmp/gt-remote-rootfs.XXXXXX)
    say "no registry reachable: debootstrapping bookworm (about a minute)"
    debootstrap --variant=minbase --include=openssh-server,python3,rsync,procps \
        bookworm "$root" "$mirror" >/tmp/gt-remote-debootstrap.log 2>&1 \
        || { rm -rf "$root"; die "debootstrap failed; see /tmp/gt-remote-debootstrap.log"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$base_tag" >/dev/null
    rm -rf "$root"
    say "imported offline base image $base_tag"
}

ensure_base() {
    have_image "$base_tag" && return
    if have_image "$upstream_base" || timeout 60 docker pull -q "$upstream_base" >/dev/null 2>&1; then
        docker tag "$upstream_base" "$base_tag"
        return
    fi
    build_offline_base
}

context_hash() { cat "$here/Dockerfile" "$here/sshd_config" "$here/shells.sh" | sha256sum | cut -c1-16; }

ensure_test_image() {
    local want have
    want=$(context_hash)
    have=$(docker image inspect -f '{{ index .Config.Labels "gt-remote.context" }}' "$test_tag" 2>/dev/null || true)
    [ "$want" = "$have" ] && return
    say "building $test_tag"
    docker build --build-arg "BASE_IMAGE=$base_tag" --label "gt-remote.context=$want" \
        -t "$test_tag" "$here" >/tmp/gt-remote-build.log 2>&1 \
        || die "building $test_tag failed; see /tmp/gt-remote-build.log"
}

# Host-side programs the tests drive: rsync (gt-remote sync), systemd-analyze (unit checks),
# the OpenSSH client, and autossh (the benchmark's reference); and MariaDB's server and client
# (mariadbd, mariadb-install-db, mariadb: the laptop's end of a back tunnel, a real MySQL-protocol
# server each test starts on a free port of its own, tests/e2e/mariadb.py).
ensure_host_tools() {
    local missing=() server=() pair
    for pair in rsync:rsync systemd-analyze:systemd ssh:openssh-client autossh:autossh fish:fish zsh:zsh script:bsdutils; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    # The -core packages only: the programs, without mariadb-server's service, its postinst that
    # starts it, or its default database on port 3306. mariadbd lives in /usr/sbin, off a user's PATH.
    for pair in mariadbd:mariadb-server-core mariadb-install-db:mariadb-server-core mariadb:mariadb-client-core; do
        command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] \
            || [[ " ${server[*]} " == *" ${pair#*:} "* ]] || server+=("${pair#*:}")
    done
    local all=("${missing[@]}" "${server[@]}")
    [ ${#all[@]} -eq 0 ] && return
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || die "missing programs: ${all[*]}; install them, then run again"
    say "installing ${all[*]}"
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
            || die "installing ${missing[*]} failed"
    fi
    if [ ${#server[@]} -gt 0 ]; then
        install_starting_nothing "${server[@]}" || die "installing ${server[*]} failed"
    fi
}

# apt-get install with every service start refused: a policy-rc.d that answers 101 ("action
# forbidden") while it runs, for invoke-rc.d and deb-systemd-invoke alike. A machine that already
# has a policy-rc.d keeps its own (and its own policy); ours is removed afterwards, also when
# apt-get fails or the script is interrupted (the EXIT trap).
install_starting_nothing() {
    local guard=/usr/sbin/policy-rc.d status=0
    if [ ! -e "$guard" ]; then
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 0755 "$guard"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || status=$?
    if [ "$(trap -p EXIT)" ]; then rm -f "$guard"; trap - EXIT; fi
    return "$status"
}

[ "$mode" = demo ] || ensure_host_tools
ensure_engine
ensure_base
ensure_test_image
say "ready ($mode): engine up, images $base_tag and $test_tag"
