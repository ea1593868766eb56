#!/usr/bin/env bash
# The README's demo command: set up (idempotent), then run the node on the synthetic camera
# (or on a bag / image folder given as arguments, see `local-features demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/ros_env.sh
exec .venv/bin/local-features demo "$@"
