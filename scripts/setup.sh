#!/usr/bin/env bash
# Installs and builds everything Paddock needs on a fresh Debian 12 machine; idempotent and quick
# when nothing changed (apt only runs for missing packages, the guest kernel and initramfs are
# cached under ${PADDOCK_CACHE:-/var/cache/paddock} by content hash).
#
#   scripts/setup.sh            daemon + test prerequisites
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[setup] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "scripts/setup.sh must run as root (it installs packages and builds into /var/cache)" >&2; exit 1; }

packages=(
  # the VMM and the guest build
  qemu-system-x86 qemu-system-common util-linux kmod cpio xz-utils
  linux-source-6.1 bc flex bison libelf-dev build-essential
  musl-tools busybox-static
  # container networking: namespace, switch build, NAT (iptables) and the userspace uplink
  iproute2 iptables slirp4netns gcc libc6-dev
  # tests: a real registry, real clients, and dockerd as the reference
  docker-registry docker.io containerd runc docker-compose python3-docker iproute2
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund >&2
fi

log "guest initramfs: $(bash rootfs-builder/build.sh)"
log "guest kernel: $(bash kernel/build.sh)"
log "network switch: $(bash scripts/build-switch.sh)"
log "compiling TypeScript"
npx tsc -p tsconfig.json >&2
