#!/usr/bin/env bash
# Builds a small BIOS boot disk for a VirtualBox VM (VirtualBox cannot boot a kernel directly):
#
#   rootfs-builder/vbox-boot-disk.sh KERNEL INITRD OUT.(vdi|img) [KERNEL ARGUMENT...]
#
# One FAT partition at 1 MiB holding the kernel (bzImage), the initramfs and a syslinux.cfg with
# the command line, syslinux's boot code in it and syslinux's MBR in front. Everything is done on
# image files (mkfs.vfat --offset, mtools, syslinux's mtools installer): no loop devices, no
# mounts, no root-only steps beyond apt. A .vdi output is converted with qemu-img.
#
# The VirtualBox driver (src/drivers/hypervisor/virtualbox.ts) builds one per VM, because the
# kernel command line carries per-VM arguments. PADDOCK_NO_INSTALL=1 fails instead of running apt.
set -euo pipefail

log() { echo "[vbox-boot-disk] $*" >&2; }
die() { log "$*"; exit 1; }

[ "$#" -ge 3 ] || die "usage: $0 KERNEL INITRD OUT.(vdi|img) [KERNEL ARGUMENT...]"
kernel=$1 initrd=$2 out=$3
shift 3
cmdline="$*"
[ -f "$kernel" ] || die "kernel $kernel is not a file"
[ -f "$initrd" ] || die "initramfs $initrd is not a file"
case "$out" in
  ""|"/"|*/) die "refusing output path '$out'";;
  *.vdi) format=vdi;;
  *.img) format=raw;;
  *) die "output must end in .vdi or .img: $out";;
esac
out_dir=$(dirname -- "$out")
[ -d "$out_dir" ] || die "output directory $out_dir does not exist"
case "$cmdline" in *$'\n'*) die "kernel arguments may not contain newlines";; esac

mbr=/usr/lib/syslinux/mbr/mbr.bin
need=()
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v syslinux >/dev/null || need+=(syslinux)
[ -f "$mbr" ] || need+=(syslinux-common)
command -v sfdisk >/dev/null || need+=(fdisk)
if [ "$format" = vdi ] && ! command -v qemu-img >/dev/null; then need+=(qemu-utils); fi
if [ "${#need[@]}" -gt 0 ]; then
  [ -z "${PADDOCK_NO_INSTALL:-}" ] || die "missing packages: ${need[*]} (apt-get install ${need[*]})"
  log "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
    { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/paddock-vbox-boot.XXXXXX")
case "$work" in "${TMPDIR:-/tmp}"/paddock-vbox-boot.*) ;; *) die "bad work dir $work";; esac
trap 'rm -rf -- "$work"' EXIT
raw="$work/disk.img"

# Size: both files, 25% slack for FAT overhead, at least 16 MiB, whole MiB.
bytes=$(( $(stat -c %s "$kernel") + $(stat -c %s "$initrd") ))
mib=$(( (bytes * 5 / 4) / 1048576 + 4 ))
[ "$mib" -ge 16 ] || mib=16
truncate -s "$((mib + 1))M" "$raw"
echo 'start=2048, type=e, bootable' | sfdisk --quiet --no-reread --no-tell-kernel "$raw" >/dev/null
# --offset/-h: the file system starts at sector 2048 and says so in its BPB (hidden sectors).
mkfs.vfat -F 16 --offset 2048 -h 2048 -n PADDOCK "$raw" $((mib * 1024)) >/dev/null
fat="$raw@@1M"
cat > "$work/syslinux.cfg" <<EOF
DEFAULT paddock
PROMPT 0
TIMEOUT 0
LABEL paddock
  LINUX /vmlinuz
  INITRD /initrd
  APPEND $cmdline
EOF
mcopy -i "$fat" "$kernel" ::/vmlinuz
mcopy -i "$fat" "$initrd" ::/initrd
mcopy -i "$fat" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --offset $((2048 * 512)) --install "$raw"
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none

tmp_out="$out.tmp.$$"
if [ "$format" = vdi ]; then
  qemu-img convert -q -f raw -O vdi "$raw" "$tmp_out"
else
  mv -- "$raw" "$tmp_out"
fi
mv -f -- "$tmp_out" "$out"
log "built $out ($mib MiB FAT, syslinux)"
