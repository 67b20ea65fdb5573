#!/usr/bin/env bash
# Builds the Paddock guest kernel from Debian's linux-source-6.1 and caches it outside the repo.
#
#   kernel/build.sh            build (or reuse) and print the cache directory holding
#                              bzImage, vmlinux (PVH-bootable ELF) and .config
#
# The cache key is the hash of guest.config, this script and the source package version, so an
# edit to either rebuilds and an unchanged tree never does. PADDOCK_CACHE (default
# /var/cache/paddock) chooses where the cache lives.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${PADDOCK_CACHE:-/var/cache/paddock}
case "$cache_root" in ""|"/") echo "refusing cache root '$cache_root'" >&2; exit 1;; esac

log() { echo "[kernel] $*" >&2; }

src_tar=/usr/src/linux-source-6.1.tar.xz
if [ ! -f "$src_tar" ]; then
  log "installing linux-source-6.1 and build tools (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends linux-source-6.1 bc flex bison libelf-dev \
    build-essential xz-utils cpio >&2 || { apt-get update -qq >&2 && apt-get install -y -qq \
    --no-install-recommends linux-source-6.1 bc flex bison libelf-dev build-essential xz-utils cpio >&2; }
fi
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$(cat "$here/guest.config" "$here/build.sh" <(echo "$src_version") | sha256sum | cut -c1-16)
out="$cache_root/kernel/$key"

if [ -f "$out/bzImage" ] && [ -f "$out/vmlinux" ]; then
  echo "$out"; exit 0
fi

if [ -n "${PADDOCK_NO_BUILD:-}" ]; then
  echo "not built yet: run $0 (PADDOCK_NO_BUILD is set)" >&2; exit 3
fi
work="$cache_root/kernel-build/linux-$src_version"
case "$work" in "$cache_root"/kernel-build/linux-*) ;; *) echo "bad work dir" >&2; exit 1;; esac
# One build at a time in the shared source tree (tests, the daemon and setup may all ask at once);
# whoever waited finds the result cached.
mkdir -p "$cache_root/kernel-build"
exec 9>"$cache_root/kernel-build/.lock"
flock 9
if [ -f "$out/bzImage" ] && [ -f "$out/vmlinux" ]; then
  echo "$out"; exit 0
fi
if [ ! -f "$work/Makefile" ]; then
  log "unpacking $src_tar (once per source version)"
  rm -rf -- "$work.tmp"; mkdir -p "$work.tmp"
  tar -xJf "$src_tar" -C "$work.tmp" --strip-components=1
  rm -rf -- "$work"; mv "$work.tmp" "$work"
fi

cd "$work"
log "configuring (allnoconfig + guest.config)"
make -s allnoconfig
args=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y) args+=(--enable "${line%%=*}");;
    CONFIG_*=*) args+=(--set-val "${line%%=*}" "${line#*=}");;
    "# CONFIG_"*" is not set") name=${line#\# }; args+=(--disable "${name%% *}");;
  esac
done < "$here/guest.config"
scripts/config "${args[@]}"
make -s olddefconfig
# A second pass: options whose dependencies were enabled by the first pass only now appear.
scripts/config "${args[@]}"
make -s olddefconfig

missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qx -- "$line" .config || { log "MISSING after olddefconfig: $line"; missing=1; };;
    "# CONFIG_"*" is not set") name=${line#\# }; name=${name%% *}
      ! grep -q -- "^$name=" .config || { log "NOT DISABLED: $name"; missing=1; };;
  esac
done < "$here/guest.config"
[ "$missing" = 0 ] || { log "config verification failed"; exit 1; }

log "building with $(nproc) jobs (about 10-15 minutes on 2 cores)"
make -s -j"$(nproc)" bzImage >&2
mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage vmlinux .config "$out.tmp/"
make -s kernelrelease > "$out.tmp/release"
rm -rf -- "$out"; mv "$out.tmp" "$out"
log "cached in $out"
echo "$out"
