#!/usr/bin/env bash
# Builds the `tiny` profile's artefacts from installed Debian packages only (no downloads):
#   profiles/tiny/build/vmlinuz     Debian's cloud kernel
#   profiles/tiny/build/initrd.img  busybox-static initramfs that runs profiles/tiny/init/init
#   profiles/tiny/build/base.qcow2  a small ext4 filesystem with /etc/tiny-release
# Quick no-op when every output is newer than every input. Outputs are reproducible (fixed
# timestamps and UUIDs), so a rebuild does not change the base version and force a re-provision.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
profile="$here/profiles/tiny"
out="$profile/build"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600} # 2026-01-01T00:00:00Z

kver=${TINY_KERNEL_VERSION:-}
if [[ -z "$kver" ]]; then
  kver=$(find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
fi
[[ -n "$kver" && -r "/boot/vmlinuz-$kver" ]] ||
  { echo "build-tiny: no cloud kernel in /boot; run scripts/install-deps.sh" >&2; exit 1; }
moddir="/lib/modules/$kver"

# What the guest init needs, in the order modprobe resolves (virtio_ring before virtio, …);
# pvpanic lets a guest kernel panic reach libvirt as a `crashed` state.
MODULES=(virtio_pci virtio_console virtio_blk isofs pvpanic-mmio)

# The QEMU guest agent, with the shared libraries it needs (corral gitlab runs job scripts through it).
QGA=/usr/sbin/qemu-ga
[[ -x "$QGA" ]] || { echo "build-tiny: no $QGA; run scripts/install-deps.sh" >&2; exit 1; }

inputs=("/boot/vmlinuz-$kver" /bin/busybox "$QGA" "$profile/init/init" "$0")
outputs=("$out/vmlinuz" "$out/initrd.img" "$out/base.qcow2")

up_to_date() {
  local o i
  for o in "${outputs[@]}"; do
    [[ -e "$o" ]] || return 1
    for i in "${inputs[@]}"; do [[ "$o" -nt "$i" ]] || return 1; done
  done
}

if up_to_date; then
  echo "build-tiny: up to date ($out)"
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-tiny.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. kernel
cp "/boot/vmlinuz-$kver" "$work/vmlinuz"

# 2. initramfs
root="$work/initramfs"
mkdir -p "$root"/{bin,etc,lib/modules,proc,sys,dev,mnt/root,seed,tmp}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$profile/init/init" "$root/init"
mkdir -p "$root/usr/sbin"
cp "$QGA" "$root/usr/sbin/qemu-ga"
ldd "$QGA" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
: >"$root/etc/modules.order"
for m in "${MODULES[@]}"; do
  modprobe --show-depends -S "$kver" "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  case "$ko" in
    *.ko) ;;
    *) echo "build-tiny: $ko is compressed; the busybox insmod needs plain .ko files" >&2; exit 1 ;;
  esac
  [[ -r "$ko" ]] || { echo "build-tiny: missing $ko" >&2; exit 1; }
  cp "$ko" "$root/lib/modules/"
  basename "$ko" >>"$root/etc/modules.order"
done
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) | gzip -9 -n >"$work/initrd.img"

# 3. base disk: ext4 is built into the cloud kernel, so the guest can mount it without modules.
fs="$work/basefs"
mkdir -p "$fs/etc"
echo "tiny 1" >"$fs/etc/tiny-release"
find "$fs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
truncate -s 16M "$work/base.raw"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L tiny -d "$fs" \
  -U 6e1f3c2a-7d4b-4c1e-9a0f-00000000c0a1 -E hash_seed=6e1f3c2a-7d4b-4c1e-9a0f-00000000c0a2 \
  -T default "$work/base.raw"
# mkfs -d keeps the source files' ctimes (always "now"), so pin every inode's times.
(cd "$fs" && find . -printf '/%P\n') | while read -r p; do
  for f in ctime crtime atime mtime; do echo "sif $p $f @$SOURCE_DATE_EPOCH"; echo "sif $p ${f}_extra 0"; done
done >"$work/debugfs.cmds"
for f in ctime crtime atime mtime; do echo "sif /lost+found $f @$SOURCE_DATE_EPOCH"; echo "sif /lost+found ${f}_extra 0"; done >>"$work/debugfs.cmds"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$work/debugfs.cmds" "$work/base.raw" >/dev/null 2>&1
qemu-img convert -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"

for f in vmlinuz initrd.img base.qcow2; do mv -f "$work/$f" "$out/$f"; done
echo "build-tiny: built $out (kernel $kver)"
