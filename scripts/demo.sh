#!/usr/bin/env bash
# The README's demo: on a fresh Debian machine, install what corral needs, build the tiny profile,
# start an isolated libvirtd, reconcile the built-in profile against it and show the result.
#   scripts/demo.sh           run the demo (idempotent: a second run reconciles again)
#   scripts/demo.sh cleanup   destroy the demo's guests and libvirtd, remove its state
set -euo pipefail
cd "$(dirname "$0")/.."

SANDBOX=${CORRAL_DEMO_SANDBOX:-/tmp/corral-demo}
# The built-in default config: the built-in profiles, ./state and ./images, prefix "ci".
unset CORRAL_CONFIG
[[ -e corral.yaml ]] && { echo "demo: ./corral.yaml exists; the demo uses the built-in default config" >&2; exit 1; }

if [[ "${1:-}" == cleanup ]]; then
  [[ -e "$SANDBOX/launcher.pid" ]] && bash scripts/libvirtd-sandbox.sh stop "$SANDBOX"
  find state -mindepth 1 ! -name .gitkeep -exec rm -rf {} + 2>/dev/null || true
  rm -rf images
  echo "demo: cleaned up"
  exit 0
fi

bash scripts/install-deps.sh
[[ -d node_modules ]] || npm ci --no-audit --no-fund
npm run build --silent
bash scripts/build-tiny.sh

if [[ ! -e "$SANDBOX/launcher.pid" ]]; then
  uri=$(bash scripts/libvirtd-sandbox.sh start "$SANDBOX")
else
  uri="qemu+unix:///system?socket=$SANDBOX/run/libvirt/libvirt-sock"
fi
export LIBVIRT_DEFAULT_URI=$uri

echo "demo: libvirtd at $uri"
echo "demo: corral plan"
node bin/corral.js plan
echo "demo: corral reconcile --once (boots real guests under TCG; about a minute)"
node bin/corral.js reconcile --once
echo "demo: corral status"
node bin/corral.js status
echo
echo "demo: corral inspect ci-runner-tiny.1 (where did this runner come from?)"
node bin/corral.js inspect ci-runner-tiny.1
echo
echo "demo: guests: virsh -c '$uri' list --all"
virsh -c "$uri" list --all
cat <<MSG
Try next (same shell):
  export LIBVIRT_DEFAULT_URI='$uri'
  echo 'hello v2' > profiles/tiny/provision/message && node bin/corral.js plan && node bin/corral.js reconcile --once   # git checkout profiles/tiny to undo
  node bin/corral.js logs ci-runner-tiny.1         # what the runner booted from its template
  node bin/corral.js history tiny                  # every build, with why it happened
  head -c 24 /dev/urandom | base64 > state/api-token && node bin/corral.js serve --token-file state/api-token   # the console: http://127.0.0.1:8470/
Clean up: scripts/demo.sh cleanup
MSG
