#!/usr/bin/env bash
# Makes a small bootable Debian 12 cloud image (BIOS, one ext4 partition, cloud-init with only
# the NoCloud datasource) from Debian packages only: mmdebstrap from the host's own apt sources,
# grub written by hand, no loop devices, no root needed beyond what mmdebstrap's root mode wants.
#
#   build-image.sh [OUT]     OUT defaults to build/debian-12.qcow2 beside this script
#
# The image is cached by this script's content under $CORRAL_IMAGE_CACHE (default
# /var/tmp/corral-images): a second run with an unchanged script only links or copies the cached
# file into place (well under a second), so CI pays the ~3 min build once per machine.
# Needs: mmdebstrap grub-pc-bin fdisk qemu-utils e2fsprogs (scripts/install-deps.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build/debian-12.qcow2}
cache_dir=${CORRAL_IMAGE_CACHE:-/var/tmp/corral-images}
key=$(sha256sum "$0" | cut -c1-16)
cached=$cache_dir/debian-12-$key.qcow2

place() {
  mkdir -p "$(dirname "$out")"
  # A hard link when the cache is on the same filesystem; the profile's base is then free.
  ln -f "$cached" "$out" 2>/dev/null || cp --reflink=auto "$cached" "$out"
  echo "debian-12 image: $out (cache $cached)"
}

if [[ -f "$cached" ]]; then place; exit 0; fi
((EUID == 0)) || { echo "build-image.sh: building the image needs root (mmdebstrap --mode=root); the cached copy is missing: $cached" >&2; exit 1; }

mkdir -p "$cache_dir"
work=$(mktemp -d "$cache_dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "debian-12 image: building in $work (a few minutes; cached afterwards)" >&2

sources=/etc/apt/sources.list.d/debian.sources
[[ -f "$sources" ]] || sources=/etc/apt/sources.list

mmdebstrap --quiet --variant=minbase --mode=root \
  --include=systemd,systemd-sysv,udev,dbus,cloud-init,linux-image-cloud-amd64,iproute2,ifupdown,isc-dhcp-client,openssh-server,cloud-guest-utils,e2fsprogs,qemu-guest-agent \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --aptopt='APT::Install-Recommends "false"' \
  bookworm "$work/root" - <"$sources"

root=$work/root
kernel=$(ls "$root/boot" | sed -n 's/^vmlinuz-//p' | head -1)
echo '/dev/vda1 / ext4 errors=remount-ro 0 1' >"$root/etc/fstab"
echo localhost >"$root/etc/hostname"
# Only NoCloud (corral's cidata seed): probing cloud providers' metadata services costs minutes under
# TCG. No locale module: minbase has no `locales`, and its failure would make every boot an error.
cat >"$root/etc/cloud/cloud.cfg.d/90-corral.cfg" <<'CFG'
datasource_list: [ NoCloud, None ]
locale: false
CFG
# No identity baked into the image: every boot of a new instance makes its own.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/boot/grub"
cat >"$root/boot/grub/grub.cfg" <<GRUB
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry debian {
  linux /boot/vmlinuz-$kernel root=/dev/vda1 ro console=ttyS0,115200
  initrd /boot/initrd.img-$kernel
}
GRUB
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*

disk=$work/disk.raw part=$work/part.raw
truncate -s 2G "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
sectors=$(sfdisk -l -o Sectors "$disk" | tail -1 | tr -d ' ')
truncate -s $((sectors * 512)) "$part"
mkfs.ext4 -q -F -L debroot -d "$root" "$part"
dd if="$part" of="$disk" bs=1M seek=1 conv=sparse,notrunc status=none
rm -f "$part"
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux configfile serial terminal echo test search
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
qemu-img convert -c -f raw -O qcow2 "$disk" "$work/image.qcow2"
mv "$work/image.qcow2" "$cached"
# Nothing piles up: keep the three newest versions (other checkouts may use an older script).
ls -t "$cache_dir"/debian-12-*.qcow2 | tail -n +4 | xargs -r rm -f
place
