#!/usr/bin/env bash
# Builds the guest agent (static, musl) and the initramfs that holds it as /init.
#
#   rootfs-builder/build.sh [--cloud-kernel]   prints the cache directory holding
#                                              paddock-agent and initramfs.cpio
#
# --cloud-kernel also packs the virtio modules of Debian's linux-image-cloud-amd64 (the fallback
# kernel, which has virtio as modules) and lists them for the agent to load at boot.
# Output is cached outside the repo (PADDOCK_CACHE, default /var/cache/paddock) by content hash.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${PADDOCK_CACHE:-/var/cache/paddock}
case "$cache_root" in ""|"/") echo "refusing cache root '$cache_root'" >&2; exit 1;; esac
log() { echo "[initramfs] $*" >&2; }

cloud=0
[ "${1:-}" = "--cloud-kernel" ] && cloud=1

if ! command -v musl-gcc >/dev/null || ! command -v cpio >/dev/null; then
  log "installing musl-tools and cpio (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends musl-tools cpio >&2 || { apt-get update -qq >&2 &&
    apt-get install -y -qq --no-install-recommends musl-tools cpio >&2; }
fi

cloud_release=""
if [ "$cloud" = 1 ]; then
  cloud_release=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -1 || true)
  if [ -z "$cloud_release" ]; then
    log "installing linux-image-cloud-amd64 (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 >&2
    cloud_release=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -1)
  fi
fi

key=$( (cat "$here/agent/agent.c" "$here/build.sh"; echo "$cloud_release") | sha256sum | cut -c1-16)
out="$cache_root/initramfs/$key"
if [ -f "$out/initramfs.cpio" ]; then echo "$out"; exit 0; fi

if [ -n "${PADDOCK_NO_BUILD:-}" ]; then
  echo "not built yet: run $0 (PADDOCK_NO_BUILD is set)" >&2; exit 3
fi
mkdir -p "$cache_root/initramfs"
stage=$(mktemp -d "$cache_root/initramfs/stage.XXXXXX")
case "$stage" in "$cache_root"/initramfs/stage.*) ;; *) echo "bad stage dir" >&2; exit 1;; esac
trap 'rm -rf -- "$stage"' EXIT

log "compiling the agent"
musl-gcc -static -Os -s -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -o "$stage/paddock-agent" "$here/agent/agent.c"

root="$stage/root"
mkdir -p "$root"/{dev,proc,sys,run,tmp,etc/paddock}
cp "$stage/paddock-agent" "$root/init"
# The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

if [ "$cloud" = 1 ]; then
  moddir=/lib/modules/$cloud_release
  list=()
  for m in virtio_pci virtio_mmio virtio_blk virtio_net virtio_console virtio_rng virtiofs 9pnet_virtio 9p \
           overlay ext4 vmw_vsock_virtio_transport; do
    while read -r kind path _; do
      [ "$kind" = insmod ] && list+=("$path")
    done < <(modprobe -S "$cloud_release" --show-depends "$m" 2>/dev/null || true)
  done
  : > "$root/etc/paddock/modules"
  declare -A seen=()
  for path in "${list[@]}"; do
    [ -n "${seen[$path]:-}" ] && continue; seen[$path]=1
    rel=${path#/}; rel=${rel%.xz}; rel=${rel%.zst}
    mkdir -p "$root/$(dirname "$rel")"
    case "$path" in
      *.xz) xz -dc "$path" > "$root/$rel";;
      *.zst) zstd -dc "$path" > "$root/$rel";;
      *) cp "$path" "$root/$rel";;
    esac
    echo "/$rel" >> "$root/etc/paddock/modules"
  done
  cp "/boot/vmlinuz-$cloud_release" "$stage/vmlinuz"
  echo "$cloud_release" > "$stage/release"
fi

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$stage/initramfs.cpio"
rm -rf -- "$root"
rm -rf -- "$out"
mkdir -p "$(dirname "$out")"
mv "$stage" "$out"
trap - EXIT
log "cached in $out ($(stat -c %s "$out/initramfs.cpio") bytes)"
echo "$out"
