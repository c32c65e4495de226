#!/usr/bin/env bash
# Builds the container image from the Dockerfile without Docker and without an image registry,
# runs it, and checks that it serves: /healthz and /nix-cache-info answer inside the container,
# the signing key survives a restart in the data volume, and `stop` (SIGTERM) ends it with exit 0.
#
# Debian's podman (vfs storage, chroot isolation, runc) in storage of its own under $CACHE. The
# base images are made locally: a debootstrap root with node and a `node` user (what the official
# node image has), imported as narthex-base, and narthex-build-base on top of it with npm and
# node-gyp's needs. The root and both base images are kept in $CACHE for the next run.
# Needs root, the Debian mirror and the npm registry. Usage: scripts/container-smoke.sh
# (NARTHEX_SMOKE_REUSE_IMAGE=1 runs the last image built again instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${NARTHEX_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/narthex-container}
SUITE=${NARTHEX_CONTAINER_SUITE:-trixie}
IMAGE=narthex:smoke
NAME=narthex-smoke-$$
PODMAN=(podman --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs --runtime runc)
# runc cannot raise these limits here past what the host allows; no network but loopback (the
# default network would add host firewall rules).
RUN=(--network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

step() { printf '== %s [%ds]\n' "$*" "$SECONDS"; }
fail() { printf 'container-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, podman with its own storage)"
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$CACHE"

if ! "${PODMAN[@]}" image exists narthex-base; then
  root="$CACHE/base-root"
  if [ ! -e "$root.done" ]; then
    step "debootstrap $SUITE with nodejs into $root"
    rm -rf "$root"
    debootstrap --variant=minbase --include=nodejs,ca-certificates "$SUITE" "$root" >"$CACHE/debootstrap.log" 2>&1 \
      || fail "debootstrap (log: $CACHE/debootstrap.log)"
    chroot "$root" useradd --create-home --uid 1000 --user-group --shell /bin/sh node
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
    touch "$root.done"
  fi
  # Certificate authorities added on this host (e.g. a TLS-inspecting proxy's) are trusted in the
  # images too, so that npm reaches its registry from inside the build as it does from here.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  step "importing the root as narthex-base"
  tar -C "$root" --one-file-system -c . | "${PODMAN[@]}" import - narthex-base >/dev/null
fi
"${PODMAN[@]}" run --rm "${RUN[@]}" narthex-base node --version | sed 's/^/node in narthex-base: /'

if ! "${PODMAN[@]}" image exists narthex-build-base; then
  step "building narthex-build-base (npm, python3, make, g++, node's headers)"
  # zstd-napi's prebuilt binary comes from outside the npm registry; here it is compiled, against
  # the headers of the image's own node (npm_config_nodedir) rather than downloaded ones.
  printf '%s\n' 'FROM narthex-base' \
    'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm python3 make g++ libnode-dev && rm -rf /var/lib/apt/lists/*' \
    'ENV npm_config_nodedir=/usr NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' |
    "${PODMAN[@]}" build --isolation chroot -t narthex-build-base -f - "$CACHE" >"$CACHE/build-base.log" 2>&1 \
    || fail "narthex-build-base (log: $CACHE/build-base.log)"
fi

built="image reused"
if [ "${NARTHEX_SMOKE_REUSE_IMAGE:-}" = 1 ] && "${PODMAN[@]}" image exists "$IMAGE"; then
  step "reusing $IMAGE (NARTHEX_SMOKE_REUSE_IMAGE=1)"
else
  step "building $IMAGE from the Dockerfile"
  started=$SECONDS
  # vfs copies the whole root for every layer: no intermediate layers (--layers=false), and the
  # previous smoke image goes first. Docker's format keeps the HEALTHCHECK (OCI's drops it).
  "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  "${PODMAN[@]}" build --isolation chroot --layers=false --format docker \
    --build-arg BASE=narthex-base --build-arg BUILD_BASE=narthex-build-base \
    -t "$IMAGE" . >"$CACHE/build.log" 2>&1 || { tail -30 "$CACHE/build.log" >&2; fail "image build (log: $CACHE/build.log)"; }
  built="built in $((SECONDS - started)) s"
  "${PODMAN[@]}" image prune -f >/dev/null
fi
size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}')

# podman schedules the image's HEALTHCHECK with a systemd timer; without systemd it says so on
# every start and stop (`healthcheck run` below runs it all the same). Those lines are dropped.
nosystemd() { "$@" >/dev/null 2> >(grep -v 'unable to get systemd connection' >&2 || true); }
cleanup() {
  "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" volume rm -f "$NAME-data" >/dev/null 2>&1 || true
}
trap cleanup EXIT

serving() { "${PODMAN[@]}" logs "$NAME" 2>&1 | grep -c '"msg":"narthex is serving"' || true; }
# Starts the container and waits for one more "narthex is serving" line than its log had before.
start() {
  local before
  before=$(serving)
  nosystemd "${PODMAN[@]}" start "$NAME"
  for _ in $(seq 1 60); do
    if [ "$(serving)" -gt "$before" ]; then return 0; fi
    [ "$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.Running}}')" = true ] || break
    sleep 0.5
  done
  "${PODMAN[@]}" logs "$NAME" >&2 || true
  fail "narthex did not start in the container"
}
get() {
  "${PODMAN[@]}" exec "$NAME" node -e "fetch('http://127.0.0.1:5557$1').then(async (r) => { process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 1) }, (e) => { console.error(e.message); process.exit(1) })"
}
public_key() { "${PODMAN[@]}" logs "$NAME" 2>&1 | grep '"msg":"narthex is serving"' | sed -n 's/.*"publicKey":"\([^"]*\)".*/\1/p' | tail -1; }

step "running $IMAGE"
"${PODMAN[@]}" create --name "$NAME" "${RUN[@]}" -v "$NAME-data:/var/lib/narthex" "$IMAGE" >/dev/null
started=$SECONDS
start
start_seconds=$((SECONDS - started))
health=$(get /healthz) || fail "/healthz did not answer 200: $health"
"${PODMAN[@]}" healthcheck run "$NAME" >/dev/null || fail "the image's HEALTHCHECK reports unhealthy"
info=$(get /nix-cache-info) || fail "/nix-cache-info did not answer 200"
grep -q '^StoreDir: /nix/store$' <<<"$info" || fail "/nix-cache-info has no StoreDir: $info"
key=$(public_key)
[ -n "$key" ] || fail "no public key in the log"

step "stopping (SIGTERM) and starting again on the same volume"
nosystemd "${PODMAN[@]}" stop -t 40 "$NAME"
code=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "narthex exited with $code on SIGTERM"
start
get /healthz >/dev/null || fail "/healthz after the restart"
[ "$(public_key)" = "$key" ] || fail "the signing key changed across a restart: the volume did not keep it"
nosystemd "${PODMAN[@]}" stop -t 40 "$NAME"

printf 'container-smoke: OK: image %s, %d MB, %s, serving %d s after start; /healthz: %s; key %s kept across a restart\n' \
  "$IMAGE" "$((size / 1000000))" "$built" "$start_seconds" "$health" "$key"
