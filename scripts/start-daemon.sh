#!/usr/bin/env bash
# Quickstart, first command: set everything up (packages, guest kernel, initramfs, build) and
# run paddockd in the foreground. Extra arguments go to paddockd (see `paddockd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/cli/paddockd.js "$@"
