#!/usr/bin/env bash
# Installs the Debian packages corral's demo and tests need. Idempotent: apt is only touched
# (and its lists only updated) when something is missing.
# Recommends are kept on purpose: they match the machine the sandbox recipe (docs/design.md, "Tests") was measured on.
set -euo pipefail

PACKAGES=(
  libvirt-daemon-system   # libvirtd, run isolated by scripts/libvirtd-sandbox.sh
  libvirt-clients         # virsh
  qemu-system-x86         # TCG guests
  qemu-utils              # qemu-img
  genisoimage             # cidata seed ISOs
  busybox-static          # the tiny profile's initramfs
  linux-image-cloud-amd64 # the tiny profile's kernel and virtio modules
  cpio                    # packing the initramfs
  e2fsprogs               # mkfs.ext4 -d for the tiny base disk
  kmod                    # modprobe --show-depends for the initramfs module order
  util-linux              # unshare, setsid, setpriv (the stock-mode e2e runs corral as user corral)
  qemu-guest-agent        # copied into the tiny guest: corral gitlab runs job scripts through it
  mmdebstrap              # examples/debian-12/build-image.sh: a Debian 12 image from Debian packages
  grub-pc-bin             # … its BIOS boot loader, written by hand (no loop devices)
  fdisk                   # … sfdisk for its partition table
  chromium                # the dashboard's browser test (driven headless by playwright-core)
  docker-registry         # the OCI registry the push/pull tests and bench run against
  skopeo                  # interop checks (skopeo inspect) and the gzip baseline in the bench
  zstd                    # chunk compression (measured against the binding in docs/oci-format.md)
  apache2-utils           # htpasswd for the authenticated-registry test
)

# The unprivileged user corral runs as on a real host (contrib/systemd) and in the stock-mode e2e.
ensure_corral_user() {
  local sudo=""
  ((EUID == 0)) || sudo=sudo
  if ! id corral >/dev/null 2>&1; then
    echo "install-deps: creating system user corral (group libvirt)"
    $sudo adduser --quiet --system --group --home /var/lib/corral --no-create-home corral
  fi
  id -nG corral | grep -qw libvirt || $sudo usermod -aG libvirt corral
}

names=()
for entry in "${PACKAGES[@]}"; do names+=("${entry%% *}"); done

missing=()
for p in "${names[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all packages present"
  ensure_corral_user
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
((EUID == 0)) || SUDO=sudo
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
ensure_corral_user
