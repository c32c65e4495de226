#!/usr/bin/env bash
# Runs config/narthex.service under a real systemd: a Debian root with systemd and node, booted
# with systemd-nspawn, narthex installed as README.md's "Running as a service" says. Checks that
# the hardened unit serves, stops cleanly on `systemctl stop`, is restarted after a crash but not
# after a bad config, and that MemoryDenyWriteExecute=yes (left out of the unit) would kill node.
# The container shares this host's network: narthex listens on 127.0.0.1:$PORT only.
# Needs root and the Debian mirror; uses this checkout's node_modules (run `npm ci` first).
# Usage: scripts/systemd-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${NARTHEX_SYSTEMD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/narthex-systemd}
SUITE=${NARTHEX_SYSTEMD_SUITE:-trixie}
PORT=${NARTHEX_SMOKE_PORT:-15557}
ROOT=$CACHE/root
URL=http://127.0.0.1:$PORT

step() { printf '== %s [%ds]\n' "$*" "$SECONDS"; }
fail() { printf 'systemd-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, systemd-nspawn)"
[ -d node_modules ] || fail "no node_modules: run npm ci first"
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$CACHE"
if [ ! -e "$ROOT.done" ]; then
  step "debootstrap $SUITE with systemd and nodejs into $ROOT"
  rm -rf "$ROOT"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,nodejs,ca-certificates,xz-utils,zstd,bzip2 \
    "$SUITE" "$ROOT" >"$CACHE/debootstrap.log" 2>&1 || fail "debootstrap (log: $CACHE/debootstrap.log)"
  touch "$ROOT.done"
fi

step "installing narthex in the root"
npm run build --silent
rm -rf "$ROOT/opt/narthex" "$ROOT/var/lib/narthex" "$ROOT/var/lib/private/narthex" "$ROOT/etc/systemd/system/narthex.service.d"
mkdir -p "$ROOT/opt/narthex" "$ROOT/etc/narthex" "$ROOT/etc/systemd/system/multi-user.target.wants"
cp -a bin dist node_modules package.json config "$ROOT/opt/narthex/"
chroot "$ROOT" id narthex >/dev/null 2>&1 ||
  chroot "$ROOT" useradd --system --home-dir /var/lib/narthex --shell /usr/sbin/nologin narthex
sed "s/^listen: .*/listen: \"127.0.0.1:$PORT\"/" config/systemd.yaml >"$ROOT/etc/narthex/narthex.yaml"
cp "$ROOT/etc/narthex/narthex.yaml" "$CACHE/good.yaml"
chroot "$ROOT" chgrp narthex /etc/narthex/narthex.yaml
chmod 0640 "$ROOT/etc/narthex/narthex.yaml"
install -m 0644 config/narthex.service "$ROOT/etc/systemd/system/narthex.service"
ln -sfn /etc/systemd/system/narthex.service "$ROOT/etc/systemd/system/multi-user.target.wants/narthex.service"

step "booting the root with systemd-nspawn"
# No systemd runs this host: no scope (--keep-unit), no registration; the container's systemd
# wants the unified cgroup hierarchy.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D "$ROOT" -b --register=no --keep-unit \
  --console=passive -M narthex-smoke >"$CACHE/boot.log" 2>&1 &
nspawn=$!
init=
poweroff() {
  if [ -n "$init" ]; then nsenter -t "$init" -a systemctl poweroff >/dev/null 2>&1 || true; fi
  for _ in $(seq 1 60); do kill -0 "$nspawn" 2>/dev/null || return 0; sleep 0.5; done
  kill "$nspawn" 2>/dev/null || true
}
trap poweroff EXIT
for _ in $(seq 1 60); do
  init=$(pgrep -P "$nspawn" -x systemd || true)
  [ -n "$init" ] && break
  sleep 0.5
done
[ -n "$init" ] || { cat "$CACHE/boot.log" >&2; fail "systemd did not start in the container"; }
in_root() { nsenter -t "$init" -a "$@"; }
prop() { in_root systemctl show narthex -p "$1" --value; }
healthy() {
  for _ in $(seq 1 90); do
    [ "$(curl -s -m 2 "$URL/healthz" || true)" = ok ] && return 0
    sleep 0.5
  done
  in_root journalctl -u narthex --no-pager -n 20 >&2 || true
  fail "$1"
}

healthy "narthex did not answer /healthz under systemd"
main=$(prop MainPID)
main_host=$(pgrep -P "$init" -x node | head -1)
[ "$(prop User)" = narthex ] || fail "not running as narthex"
grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$main_host/status" || fail "NoNewPrivileges is not in force"
grep -q '^Seccomp:[[:space:]]*2$' "/proc/$main_host/status" || fail "no seccomp filter (SystemCallFilter)"
grep -q '^CapEff:[[:space:]]*0*$' "/proc/$main_host/status" || fail "the service has capabilities"
curl -sf -m 2 "$URL/nix-cache-info" | grep -q '^StoreDir: /nix/store$' || fail "/nix-cache-info"
exposure=$(in_root systemd-analyze security narthex --no-pager 2>/dev/null | sed -n 's/.*exposure level for narthex.service: \([0-9.]*\).*/\1/p')
step "serving as narthex (main PID $main in the container), seccomp on, no capabilities; exposure $exposure"

step "systemctl stop"
started=$SECONDS
in_root systemctl stop narthex
stop_seconds=$((SECONDS - started))
[ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ] || fail "stop: Result=$(prop Result), status $(prop ExecMainStatus)"

step "a crash (SIGKILL) is restarted"
in_root systemctl start narthex
healthy "narthex did not start again"
kill -KILL "$(pgrep -P "$init" -x node | head -1)"
sleep 3
healthy "narthex was not restarted after SIGKILL"
[ "$(prop NRestarts)" = 1 ] || fail "NRestarts=$(prop NRestarts) after one crash"

step "a bad config stops it with exit 2 and no restart"
in_root systemctl stop narthex
echo 'notAKey: 1' >>"$ROOT/etc/narthex/narthex.yaml"
in_root systemctl reset-failed narthex 2>/dev/null || true
in_root systemctl start narthex || true
sleep 5
[ "$(prop ExecMainStatus)" = 2 ] && [ "$(prop NRestarts)" = 0 ] && [ "$(prop ActiveState)" = failed ] ||
  fail "bad config: status $(prop ExecMainStatus), NRestarts=$(prop NRestarts), $(prop ActiveState)"
cp "$CACHE/good.yaml" "$ROOT/etc/narthex/narthex.yaml"
in_root systemctl reset-failed narthex

step "MemoryDenyWriteExecute=yes, which the unit leaves out, kills node"
mkdir -p "$ROOT/etc/systemd/system/narthex.service.d"
printf '[Service]\nMemoryDenyWriteExecute=yes\nRestart=no\n' >"$ROOT/etc/systemd/system/narthex.service.d/mdwe.conf"
in_root systemctl daemon-reload
in_root systemctl start narthex || true
sleep 5
mdwe="$(prop Result) $(prop ExecMainStatus)"
[ "$mdwe" = "signal 5" ] || fail "under MemoryDenyWriteExecute=yes: $mdwe (node was expected to die of SIGTRAP)"
rm -r "$ROOT/etc/systemd/system/narthex.service.d"

printf 'systemd-smoke: OK: systemd %s, exposure %s, stop in %d s with status 0, restarted after SIGKILL, exit 2 not restarted, MemoryDenyWriteExecute kills node (SIGTRAP)\n' \
  "$(in_root systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')" "$exposure" "$stop_seconds"
