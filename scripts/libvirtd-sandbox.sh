#!/usr/bin/env bash
# An isolated libvirtd for tests and the demo (docs/design.md, "Tests").
#   libvirtd-sandbox.sh start DIR [--stock] -> prints the connection URI once the socket answers
#     default:  qemu runs as root, no security driver, guest stdio written to files by qemu itself
#     --stock:  Debian's packaged qemu.conf as it is (qemu as libvirt-qemu, DAC dynamic ownership,
#               guest stdio through virtlogd, started inside the sandbox), and the control socket
#               open to the `libvirt` group, as Debian's socket units and polkit rule open it: the
#               configuration corral meets on a real host, where it runs as a non-root user
#   libvirtd-sandbox.sh restart DIR -> stops that libvirtd (guests keep running) and starts it again
#   libvirtd-sandbox.sh stop DIR    -> kills that libvirtd and every process it started, removes DIR
#
# The machine's own libvirtd cannot start guests (no virtlogd), and tests must not see or touch
# its guests, so each sandbox runs in a private mount namespace with fresh dirs bound over the
# paths libvirt uses. Nothing is mounted outside that namespace, so `rm -rf DIR` from here is safe.
set -euo pipefail

CAPS_CACHE=${CORRAL_QEMU_CAPS_CACHE:-/var/tmp/corral-qemu-caps}
START_TIMEOUT=${CORRAL_LIBVIRTD_TIMEOUT:-30}

die() { echo "libvirtd-sandbox: $*" >&2; exit 1; }

uri_for() { echo "qemu+unix:///system?socket=$1/run/libvirt/libvirt-sock"; }

# Every process whose mount namespace is the sandbox's: libvirtd, its qemus, any helper.
ns_pids() {
  local ns=$1 p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/ns/mnt" 2>/dev/null || true)" == "$ns" ]] && echo "${p#/proc/}"
  done
  return 0
}

start() {
  local dir=$1 mode=${2:-}
  [[ -n "$dir" ]] || die "usage: $0 start DIR [--stock]"
  [[ -z "$mode" || "$mode" == --stock ]] || die "unknown option $mode"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ -e "$dir/launcher.pid" ]] && die "$dir already holds a sandbox (stop it first)"
  # A unix socket path must fit in 108 bytes.
  (( ${#dir} < 70 )) || die "DIR path too long for a unix socket: $dir"

  mkdir -p "$dir"/{etc,run/libvirt,lib,log,cache} "$CAPS_CACHE"
  cp -a /etc/libvirt/. "$dir/etc/"
  # No autostarted default network: it would want dnsmasq and firewall rules we don't need.
  rm -rf "$dir/etc/qemu/networks/autostart"
  # libvirt reads the first occurrence of a key, so disable any active ones before appending ours.
  local keys='cgroup_controllers|namespaces'
  [[ "$mode" == --stock ]] || keys="$keys|stdio_handler|user|group|dynamic_ownership|security_driver"
  sed -i -E "s/^[[:space:]]*($keys)[[:space:]]*=/# &/" "$dir/etc/qemu.conf"
  if [[ "$mode" != --stock ]]; then
    cat >>"$dir/etc/qemu.conf" <<'EOF'

# corral sandbox (docs/design.md, "Tests")
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
EOF
  else
    # The only departures from the packaged qemu.conf are the two settings below that every
    # sandbox needs; the control socket is opened to the libvirt group as Debian's libvirtd.socket does.
    sed -i -E 's/^[[:space:]]*(unix_sock_group|unix_sock_rw_perms|auth_unix_rw)[[:space:]]*=/# &/' "$dir/etc/libvirtd.conf"
    printf '\nunix_sock_group = "libvirt"\nunix_sock_rw_perms = "0770"\nauth_unix_rw = "none"\n' >>"$dir/etc/libvirtd.conf"
    # A non-root client must reach the socket under DIR.
    chmod 0755 "$dir" "$dir/run" "$dir/run/libvirt"
  fi
  cat >>"$dir/etc/qemu.conf" <<'EOF'
cgroup_controllers = [ ]
# qemu must stay in the sandbox's mount namespace (libvirt's default gives each its own), or
# `stop` cannot find it and guests outlive their libvirtd.
namespaces = [ ]
EOF

  local inner
  inner=$(cat <<'EOS'
set -e
d=$1 caps=$2 mode=$3
mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
mount --bind "$d/etc" /etc/libvirt
mount --bind "$d/run/libvirt" /run/libvirt
mount --bind "$d/lib" /var/lib/libvirt
mount --bind "$d/log" /var/log/libvirt
mount --bind "$d/cache" /var/cache/libvirt
# The capabilities probe costs ~8 s; the cache is keyed by the qemu binary, so it is safe to share.
mkdir -p /var/cache/libvirt/qemu/capabilities
mount --bind "$caps" /var/cache/libvirt/qemu/capabilities
# Stock libvirt hands guest stdio to virtlogd; it must run in this namespace to see these dirs.
[ "$mode" = --stock ] && virtlogd --daemon --pid-file "$d/virtlogd.pid"
# Holds the namespace open while libvirtd is down for a restart (stop kills it with the rest).
sleep infinity </dev/null >/dev/null 2>&1 &
echo $! >"$d/anchor.pid"
exec libvirtd --pid-file "$d/libvirtd.pid"
EOS
)
  setsid unshare --mount --propagation private bash -c "$inner" sandbox "$dir" "$CAPS_CACHE" "$mode" \
    </dev/null >"$dir/libvirtd.out" 2>&1 &
  local launcher=$!
  echo "$launcher" >"$dir/launcher.pid"

  local uri deadline=$((SECONDS + START_TIMEOUT))
  uri=$(uri_for "$dir")
  until [[ -S "$dir/run/libvirt/libvirt-sock" ]] && virsh -q -c "$uri" version >/dev/null 2>&1; do
    if ! kill -0 "$launcher" 2>/dev/null; then
      cat "$dir/libvirtd.out" >&2 || true
      stop "$dir"
      die "libvirtd exited during startup"
    fi
    (( SECONDS < deadline )) || { stop "$dir"; die "libvirtd did not answer within ${START_TIMEOUT}s"; }
    sleep 0.05
  done
  readlink "/proc/$launcher/ns/mnt" >"$dir/mntns"
  echo "$uri" >"$dir/uri"
  echo "$uri"
}

restart() {
  local dir=$1 pid anchor
  [[ -n "$dir" && -f "$dir/mntns" ]] || die "usage: $0 restart DIR (a running sandbox)"
  dir=$(cd "$dir" && pwd)
  anchor=$(cat "$dir/anchor.pid")
  [[ "$(readlink "/proc/$anchor/ns/mnt" 2>/dev/null || true)" == "$(cat "$dir/mntns")" ]] || die "$dir: namespace anchor is gone"
  pid=$(cat "$dir/libvirtd.pid" 2>/dev/null || true)
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/libvirtd.pid"
  setsid nsenter --mount="/proc/$anchor/ns/mnt" -- libvirtd --pid-file "$dir/libvirtd.pid" \
    </dev/null >>"$dir/libvirtd.out" 2>&1 &
  local uri deadline=$((SECONDS + START_TIMEOUT))
  uri=$(uri_for "$dir")
  until virsh -q -c "$uri" version >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "libvirtd did not answer within ${START_TIMEOUT}s after a restart"
    sleep 0.05
  done
  echo "$uri"
}

stop() {
  local dir=$1 ns="" pid
  [[ -n "$dir" ]] || die "usage: $0 stop DIR"
  [[ -d "$dir" ]] || return 0
  [[ -f "$dir/mntns" ]] && ns=$(cat "$dir/mntns")
  if [[ -z "$ns" && -f "$dir/launcher.pid" ]]; then
    ns=$(readlink "/proc/$(cat "$dir/launcher.pid")/ns/mnt" 2>/dev/null || true)
  fi
  # Never match our own namespace: that would kill the caller.
  if [[ -n "$ns" && "$ns" != "$(readlink /proc/self/ns/mnt)" ]]; then
    for pid in $(ns_pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + 10))
    while [[ -n "$(ns_pids "$ns")" ]] && (( SECONDS < deadline )); do sleep 0.05; done
  elif [[ -f "$dir/launcher.pid" ]]; then
    kill -KILL "$(cat "$dir/launcher.pid")" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "${2:-}" "${3:-}" ;;
  restart) restart "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: $0 start DIR [--stock] | restart DIR | stop DIR" ;;
esac
