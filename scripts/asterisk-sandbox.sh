#!/usr/bin/env bash
# A Debian sid chroot with Asterisk 22 in it, for the dialplan tests
# (tests/asterisk/). Debian 12 has no Asterisk, sid does; sid's packages do
# not install on bookworm, but they install in a minimal sid chroot, and an
# Asterisk started there with -f talks to the host over loopback.
#
#   sudo scripts/asterisk-sandbox.sh          # build it once, then reuse it
#   sudo scripts/asterisk-sandbox.sh --rebuild
#
# The chroot lives outside the checkout, in $ANNOUNCER_ASTERISK_SANDBOX
# (default /var/cache/announcer/asterisk-sid), and is reused: once finished it
# carries a marker and a re-run only adds packages the list has gained since
# (redis-tools) and prints the Asterisk version. A build that
# was interrupted leaves DIR.partial behind, which the next run removes and
# starts again. The Debian mirror is the one this machine's apt already uses
# ($ANNOUNCER_DEBIAN_MIRROR overrides it). Needs root (debootstrap, chroot).
set -euo pipefail

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0"
}

rebuild=no
case "${1:-}" in
    "") ;;
    --rebuild) rebuild=yes ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

dir="${ANNOUNCER_ASTERISK_SANDBOX:-/var/cache/announcer/asterisk-sid}"
dir="${dir%/}"
partial="$dir.partial"
marker="$dir/.announcer-sandbox-ready"

case "$dir" in
    /?*/?*) ;;
    *)
        echo "ANNOUNCER_ASTERISK_SANDBOX must be an absolute path at least two folders deep," >&2
        echo "not '$dir': the sandbox is a whole Debian tree that a rebuild deletes" >&2
        exit 2
        ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "$0 needs root (it runs debootstrap and chroot):" >&2
    echo "run it with sudo" >&2
    exit 1
fi

version() {
    chroot "$1" /usr/sbin/asterisk -V
}

# Unmounts whatever an interrupted debootstrap or apt left mounted under $1,
# then deletes $1 without ever crossing into another file system.
remove_tree() {
    local tree="$1" mounts
    [ -e "$tree" ] || return 0
    mounts="$(findmnt -rn -o TARGET | grep -E "^$tree(/|$)" | sort -r || true)"
    if [ -n "$mounts" ]; then
        echo "== unmounting what an interrupted build left under $tree"
        while read -r mount; do
            umount -l "$mount"
        done <<<"$mounts"
    fi
    echo "== removing $tree"
    rm -rf --one-file-system "$tree"
}

# Two builds at once (two test runs) would trip over each other: one waits.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
if ! flock -n 9; then
    echo "== another build of $dir is running; waiting for it"
    flock 9
fi
# Asterisk, and redis-cli for the dialplan's Redis mode without func_redis.
packages="asterisk asterisk-modules redis-tools"

# Packages of $packages that the chroot $1 lacks (a sandbox built before
# one was added to the list gets it added, without a rebuild).
missing_packages() {
    local package
    for package in $packages; do
        chroot "$1" dpkg-query -W -f='${Status}' "$package" 2>/dev/null \
            | grep -q "install ok installed" || echo "$package"
    done
}

install_packages() {
    local tree="$1"
    shift
    export DEBIAN_FRONTEND=noninteractive
    echo "== apt-get update (in the chroot)"
    chroot "$tree" apt-get -qq -o Acquire::Check-Valid-Until=false update
    echo "== apt-get install $* (in the chroot)"
    chroot "$tree" apt-get install -y -qq --no-install-recommends "$@" \
        >"$tree.apt.log" 2>&1 || {
        echo "apt-get install failed; the last lines of $tree.apt.log:" >&2
        tail -n 20 "$tree.apt.log" >&2
        exit 1
    }
    rm -f "$tree.apt.log"
    chroot "$tree" apt-get clean
}

if [ "$rebuild" = no ] && [ -e "$marker" ]; then
    lacking="$(missing_packages "$dir" | xargs)"
    if [ -n "$lacking" ]; then
        cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
        # shellcheck disable=SC2086  # one word per package
        install_packages "$dir" $lacking
    fi
    echo "== Asterisk sandbox ready in $dir: $(version "$dir")"
    exit 0
fi

# The mirror apt on this machine already uses: the first Debian archive in
# sources.list or sources.list.d (one-line .list or deb822 .sources files).
find_mirror() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        case "$file" in
            *.sources) grep -iE '^[[:space:]]*URIs:' "$file" | sed -E 's/^[^:]*:[[:space:]]*//' | tr ' ' '\n' ;;
            *) grep -E '^[[:space:]]*deb[[:space:]]' "$file" | sed -E 's/\[[^]]*\]//' | awk '{print $2}' ;;
        esac
    done | grep -E '^(https?|file)://[^ ]*/debian/?$' | head -n 1 | sed 's:/$::'
}
mirror="${ANNOUNCER_DEBIAN_MIRROR:-$(find_mirror || true)}"
if [ -z "$mirror" ]; then
    echo "found no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/;" >&2
    echo "set ANNOUNCER_DEBIAN_MIRROR (for example to the URL of your local Debian mirror)" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap on the host"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
fi

started=$SECONDS
[ "$rebuild" = yes ] && remove_tree "$dir"
[ -e "$dir" ] && [ ! -e "$marker" ] && remove_tree "$dir"
remove_tree "$partial"

echo "== debootstrap --variant=minbase sid $partial $mirror"
debootstrap --variant=minbase sid "$partial" "$mirror" >"$partial.debootstrap.log" 2>&1 || {
    echo "debootstrap failed; the last lines of $partial.debootstrap.log:" >&2
    tail -n 20 "$partial.debootstrap.log" >&2
    exit 1
}
rm -f "$partial.debootstrap.log"

echo "== forbidding services to start inside the chroot (policy-rc.d)"
printf '#!/bin/sh\n# announcer sandbox: nothing starts services here\nexit 101\n' \
    >"$partial/usr/sbin/policy-rc.d"
chmod 755 "$partial/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$partial/etc/resolv.conf"

# shellcheck disable=SC2086  # one word per package
install_packages "$partial" $packages

date -u +%FT%TZ >"$partial/.announcer-sandbox-ready"
mv "$partial" "$dir"
echo "== built $dir in $((SECONDS - started)) s ($(du -sh --one-file-system "$dir" | cut -f1))"
echo "== Asterisk sandbox ready in $dir: $(version "$dir")"
