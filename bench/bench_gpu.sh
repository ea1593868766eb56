#!/usr/bin/env bash
# GPU readiness table (bench/bench_gpu.py) on a CUDA machine, in one command:
#   bench/bench_gpu.sh [OUT.md] [extra bench_gpu.py options, e.g. --methods superpoint --runs 10]
# Exits 2 without CUDA (bench_gpu.py --allow-cpu runs the same code on a CPU, for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-out/bench/gpu.md}
shift || true
exec "$PY" bench/bench_gpu.py --out "$OUT" "$@"
