#!/usr/bin/env bash
# Prepares a Debian sid root holding OpenStack Swift with its S3 API (s3api middleware), the real
# S3 server the object-storage tests run against (test/helpers/s3-server.ts starts a private one
# per test file, chrooted into this root). The root is made once with debootstrap plus apt
# (~2 min, ~510 MB) at a cache location outside the clone, so later CI runs on the same machine
# reuse it; running this again with the root in place only checks it.
#
# sid, not trixie: trixie's Swift 2.35 answers conditional PUTs (If-None-Match: *) with 501, and
# narthex relies on them; Swift 2.38 answers 412.
#
# On success prints the installed Swift version (the Debian package version) on stdout.
#
# Environment:
#   NARTHEX_S3_ROOT        where the root lives (default /var/cache/narthex-ci/sid-swift)
#   NARTHEX_DEBIAN_MIRROR  Debian mirror URL (default: the first non-security Debian URI of the
#                          machine's apt sources)
# Needs root (debootstrap, chroot) and debootstrap installed.
set -euo pipefail

root="${NARTHEX_S3_ROOT:-/var/cache/narthex-ci/sid-swift}"
min_version='2.38'
packages='swift-proxy swift-account swift-container swift-object'

die() { echo "s3-root: $*" >&2; exit 1; }

# shellcheck source=scripts/debian-mirror.sh
. "$(cd "$(dirname "$0")" && pwd)/debian-mirror.sh"

in_root() { chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${@:2}"; }

swift_version() { in_root "$1" dpkg-query -W -f='${Version}' swift-proxy 2>/dev/null; }

check_version() {
  local version
  version="$(swift_version "$root")" || die "Swift is not installed in $root (remove $root to make it again)"
  for p in $packages; do
    in_root "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      die "$p is not installed in $root (remove $root to make it again)"
  done
  in_root "$root" dpkg --compare-versions "$version" ge "$min_version" ||
    die "Swift $version in $root is older than $min_version, which answers conditional PUTs with 501 (remove $root to make it again from sid)"
  echo "$version"
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9

if [ ! -x "$root/usr/bin/swift-proxy-server" ]; then
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: apt-get install -y debootstrap"
  mirror="${NARTHEX_DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}"
  [ -n "$mirror" ] || die "no Debian mirror found in the apt sources; set NARTHEX_DEBIAN_MIRROR"
  partial="$root.partial"
  log="$root.debootstrap.log"
  rm -rf "$partial"
  echo "s3-root: debootstrap sid from $mirror into $root, then apt-get install $packages (about two minutes)" >&2
  if ! debootstrap --variant=minbase sid "$partial" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap failed; full log in $log"
  fi
  # sid's Release file may be past its Valid-Until on a snapshot mirror; the packages still are what
  # the signed Release names.
  echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99narthex-no-valid-until"
  # No service starts inside the root while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$partial/usr/sbin/policy-rc.d"
  chmod 755 "$partial/usr/sbin/policy-rc.d"
  echo "deb $mirror sid main" >"$partial/etc/apt/sources.list"
  # shellcheck disable=SC2086
  if ! { in_root "$partial" apt-get update -q && in_root "$partial" apt-get install -y -q --no-install-recommends $packages; } >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "installing Swift failed; full log in $log"
  fi
  in_root "$partial" apt-get clean >>"$log" 2>&1 || true
  rm -rf "$root"
  mv "$partial" "$root"
fi

check_version
