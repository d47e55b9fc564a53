#!/usr/bin/env bash
# Installs the Debian packages named as arguments, but only those missing:
# a machine that has them all is not touched (no apt-get update either).
set -euo pipefail

missing=()
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
((${#missing[@]})) || exit 0

if [ "$(id -u)" != 0 ]; then
    echo "announcer needs these Debian packages: ${missing[*]}" >&2
    echo "run this command as root (sudo), or install them with apt-get first" >&2
    exit 1
fi
echo "== installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
