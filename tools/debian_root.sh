#!/usr/bin/env bash
# Debian roots with newer QGIS releases, and commands run inside them.
#
#   tools/debian_root.sh build SUITE           build the root once (cached under $COREG_ROOTS)
#   tools/debian_root.sh run SUITE CMD [ARG..]  run CMD in the root, the checkout at /work/coreg
#
# SUITE is a Debian suite: trixie (Debian 13, QGIS 3.40 LTR) or forky (testing, QGIS 3.44).
# A root is built with debootstrap into DIR.building under flock and renamed to DIR when complete,
# so a half-built root is never used; later runs on the same machine start in seconds.
# Everything runs in a private PID and mount namespace (unshare --kill-child): every mount and
# process dies with the command, even when it is killed. The checkout is bind-mounted read-write at
# /work/coreg and ../shared read-only at /work/shared (the tests read ../shared/data).
# Needs root (debootstrap, chroot). See ../shared/docs/qgis-headless.md.
set -euo pipefail

ROOTS="${COREG_ROOTS:-/var/cache/coreg-roots}"
MIRROR="${COREG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOT_PACKAGES="qgis python3-qgis qgis-providers python3-rasterio python3-skimage python3-scipy \
python3-matplotlib python3-pytest python3-venv python3-pip xvfb xauth make ca-certificates"
ROOT_WHEELS="pytest-qgis hypothesis bandit detect-secrets flake8"  # as the Makefile's QGIS_TEST_WHEELS
ROOT_VENV=/opt/coreg-venv
ROOT_FORMAT=2   # bump when the recipe changes: older roots are rebuilt
APT_OPTS=(-o Dpkg::Use-Pty=0 -q)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "debian_root: $*" >&2; exit 2; }

# Run "$@" in ROOT with proc, sys, dev and the binds mounted. With IN_ROOT_EXEC=exec this script
# becomes the unshare process, so a signal sent to it reaches the namespace.
in_root() {
    local root="$1"; shift
    local shared; shared="$(cd "$REPO/.." && pwd)/shared"
    ${IN_ROOT_EXEC:-} unshare --fork --pid --kill-child --mount --propagation private \
        env ROOT="$root" REPO="$REPO" SHARED="$shared" bash -euo pipefail -c '
        mount -t proc proc "$ROOT/proc"
        mount -t sysfs sysfs "$ROOT/sys"
        mount --rbind /dev "$ROOT/dev"
        mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
        mount -t tmpfs tmpfs "$ROOT/dev/shm"
        mkdir -p "$ROOT/work/coreg" "$ROOT/work/shared"
        mount --bind "$REPO" "$ROOT/work/coreg"
        if [ -d "$SHARED" ]; then mount --bind -o ro "$SHARED" "$ROOT/work/shared"; fi
        cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
        # This shell is PID 1 of the namespace, which gets no default signal handling: pass
        # TERM/INT/HUP on to the command; when this shell exits, the kernel kills the rest.
        chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
            PATH=/opt/coreg-venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@" &
        child=$!
        trap "kill -TERM $child 2>/dev/null" TERM INT HUP
        status=0
        wait $child || status=$?
        while kill -0 $child 2>/dev/null; do wait $child || status=$?; done
        exit $status
    ' bash "$@"
}

build() {
    local suite="$1" dir="$ROOTS/$1"
    mkdir -p "$ROOTS"
    exec 9>"$ROOTS/$suite.lock"
    flock 9
    if [ -f "$dir/.coreg-root-$ROOT_FORMAT" ]; then return 0; fi
    echo "debian_root: building the $suite root in $dir (a few minutes, about 2.5 GB)" >&2
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap; }
    fi
    rm -rf "$dir.building" "$dir"
    local script=""
    if [ ! -e "/usr/share/debootstrap/scripts/$suite" ]; then script=/usr/share/debootstrap/scripts/sid; fi
    debootstrap --variant=minbase "$suite" "$dir.building" "$MIRROR" $script >"$ROOTS/$suite.debootstrap.log" 2>&1 \
        || { tail -20 "$ROOTS/$suite.debootstrap.log" >&2; die "debootstrap $suite failed"; }
    printf '#!/bin/sh\nexit 101\n' >"$dir.building/usr/sbin/policy-rc.d"
    chmod 755 "$dir.building/usr/sbin/policy-rc.d"
    in_root "$dir.building" bash -euo pipefail -c "
        export DEBIAN_FRONTEND=noninteractive
        apt-get ${APT_OPTS[*]} update
        apt-get ${APT_OPTS[*]} install -y --no-install-recommends $ROOT_PACKAGES
        apt-get clean
        python3 -m venv --system-site-packages $ROOT_VENV
    "
    # pip trusts the host's CA bundle (the root's own ca-certificates lacks any local CA the host adds)
    cp /etc/ssl/certs/ca-certificates.crt "$dir.building/etc/ssl/host-ca-certificates.crt"
    in_root "$dir.building" $ROOT_VENV/bin/python -m pip install --quiet --disable-pip-version-check \
        --cert /etc/ssl/host-ca-certificates.crt $ROOT_WHEELS
    touch "$dir.building/.coreg-root-$ROOT_FORMAT"
    mv "$dir.building" "$dir"
    echo "debian_root: $suite root ready" >&2
}

[ $# -ge 2 ] || die "usage: $0 build SUITE | run SUITE CMD [ARG...]"
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, unshare, chroot)"
command="$1" suite="$2"; shift 2
case "$command" in
    build) build "$suite" ;;
    run)
        [ $# -ge 1 ] || die "run: no command given"
        (build "$suite")
        IN_ROOT_EXEC=exec in_root "$ROOTS/$suite" "$@" ;;
    *) die "unknown command $command (build or run)" ;;
esac
