#!/usr/bin/env bash
# Builds paddock-switch (src/drivers/network/paddock-switch.c), the userspace Ethernet switch
# that paddockd runs in its network namespace, into a cache outside the repository, keyed by the
# source's hash. Prints the path of the binary. Idempotent: a second call costs a hash.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src="$here/src/drivers/network/paddock-switch.c"
cache_root=${PADDOCK_CACHE:-/var/cache/paddock}
case "$cache_root" in ""|"/") echo "refusing cache root '$cache_root'" >&2; exit 1;; esac
key=$(cat "$src" "$0" | sha256sum | cut -c1-16)
out="$cache_root/switch/$key"
if [ ! -x "$out/paddock-switch" ]; then
  command -v gcc >/dev/null || { apt-get install -y -qq --no-install-recommends gcc libc6-dev >&2; }
  mkdir -p "$out"
  tmp=$(mktemp "$out/.build.XXXXXX")
  gcc -O2 -Wall -Wextra -Wno-unused-parameter -o "$tmp" "$src"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$out/paddock-switch"
  echo "[switch] built $out/paddock-switch" >&2
fi
echo "$out/paddock-switch"
