#!/usr/bin/env bash
# Builds the "full" Paddock guest kernel: guest.config + hypervisors.config, for the Xen,
# VirtualBox, Firecracker and Cloud Hypervisor drivers. Opt-in; kernel/build.sh and its
# QEMU-only kernel are unchanged.
#
#   kernel/build-full.sh       build (or reuse) and print the cache directory holding
#                              bzImage, vmlinux and .config
#
# It runs build.sh itself from a generated directory whose guest.config is both fragments, with
# its own cache root ($PADDOCK_CACHE/full): the cache key then covers both fragments and
# build.sh, and the source tree it configures is not the one a concurrent default build uses.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${PADDOCK_CACHE:-/var/cache/paddock}
case "$cache_root" in ""|"/") echo "refusing cache root '$cache_root'" >&2; exit 1;; esac
full_root="$cache_root/full"
gen="$full_root/src"
case "$gen" in "$cache_root"/full/src) ;; *) echo "bad generated dir $gen" >&2; exit 1;; esac

mkdir -p "$gen"
# Rewritten on every call, atomically, so that a concurrent call never reads half a file.
cp "$here/build.sh" "$gen/build.sh.tmp.$$" && mv -f "$gen/build.sh.tmp.$$" "$gen/build.sh"
cat "$here/guest.config" "$here/hypervisors.config" > "$gen/guest.config.tmp.$$"
mv -f "$gen/guest.config.tmp.$$" "$gen/guest.config"

PADDOCK_CACHE="$full_root" exec bash "$gen/build.sh"
