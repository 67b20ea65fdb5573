#!/usr/bin/env bash
# Makes a minimal busybox root filesystem from Debian's busybox-static, for tests and for the
# busybox image the test registry is seeded with.
#
#   rootfs-builder/busybox-rootfs.sh TARGET_DIR
set -euo pipefail
target=${1:-}
case "$target" in ""|"/") echo "usage: $0 TARGET_DIR (not empty, not /)" >&2; exit 2;; esac
target=$(realpath -m -- "$target")
[ "$target" != "/" ] || { echo "refusing /" >&2; exit 2; }

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2
fi
bb=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -1)

mkdir -p -- "$target"/{bin,etc,proc,sys,dev,tmp,root,var/tmp,home}
chmod 1777 "$target/tmp" "$target/var/tmp"
cp -- "$bb" "$target/bin/busybox"
for applet in $("$target/bin/busybox" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$target/bin/$applet"
done
mkdir -p "$target/usr"
ln -sfn ../bin "$target/usr/bin"
ln -sfn bin "$target/sbin"
cat > "$target/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
P
cat > "$target/etc/group" <<'G'
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
G
echo "$target"
