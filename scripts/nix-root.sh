#!/usr/bin/env bash
# Prepares a Debian trixie root holding Nix 2.26 (Debian's nix-bin), the second client the
# end-to-end tests run against, next to the machine's own nix. The root is made once with
# debootstrap (~1 min, ~350 MB) at a cache location outside the clone, so later CI runs on the
# same machine reuse it; running this again with the root in place only checks it.
#
# On success prints the directory of the wrappers (nix, nix-store, nix-build, …) that run the
# root's tools in a chroot, ready for NARTHEX_TEST_NIX:
#   NARTHEX_TEST_NIX="$(scripts/nix-root.sh)" node scripts/run-tests.mjs e2e
#
# Environment:
#   NARTHEX_NIX226_ROOT    where the root lives (default /var/cache/narthex-ci/trixie-nix)
#   NARTHEX_DEBIAN_MIRROR  Debian mirror URL (default: the first non-security Debian URI of the
#                          machine's apt sources)
# Needs root (debootstrap, chroot, mounts) and debootstrap installed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="${NARTHEX_NIX226_ROOT:-/var/cache/narthex-ci/trixie-nix}"
want_version='2.26'

die() { echo "nix-root: $*" >&2; exit 1; }

# shellcheck source=scripts/debian-mirror.sh
. "$here/debian-mirror.sh"

check_version() {
  local out
  out="$("$here/nix-2.26/bin/nix" --version 2>&1)" || die "nix in $root does not run (remove $root to make it again): $out"
  case "$out" in
    *" $want_version".*) ;;
    *) die "nix in $root is not $want_version (remove $root to make it again): $out" ;;
  esac
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mounts need it)"
export NARTHEX_NIX226_ROOT="$root"

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9

if [ ! -x "$root/usr/bin/nix" ]; then
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: apt-get install -y debootstrap"
  mirror="${NARTHEX_DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}"
  [ -n "$mirror" ] || die "no Debian mirror found in the apt sources; set NARTHEX_DEBIAN_MIRROR"
  partial="$root.partial"
  rm -rf "$partial"
  echo "nix-root: debootstrap trixie from $mirror into $root (about a minute)" >&2
  # libdbi-perl must be named, or bookworm's debootstrap leaves nix-bin unconfigured.
  if ! debootstrap --variant=minbase --include=nix-bin,libdbi-perl,ca-certificates,xz-utils \
    trixie "$partial" "$mirror" >"$root.debootstrap.log" 2>&1; then
    tail -n 20 "$root.debootstrap.log" >&2
    die "debootstrap failed; full log in $root.debootstrap.log"
  fi
  rm -rf "$root"
  mv "$partial" "$root"
fi

check_version
echo "$here/nix-2.26/bin"
