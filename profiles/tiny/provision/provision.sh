#!/bin/sh
# Runs inside the rebuild guest with the guest disk mounted at $1 and the seed as the working dir.
# Bakes the message into the disk, so changing `message` changes what every runner prints.
set -eu
root=$1
msg=$(cat ./message)
echo "tiny $msg (from $(cat "$root/etc/tiny-release"))" >"$root/baked"
