#!/usr/bin/env bash
# Regenerate the speed tables of docs/benchmarks.md on the machine that runs it (CPU; add --device cuda on a GPU box
# to the `local-features bench` line). Output: out/bench/*.txt. Close other programs first:
# timings are medians of repeated runs, side by side in one process per table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-out/bench}
mkdir -p "$OUT"
. scripts/ros_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
W=(--weights random)  # speed only: random weights in the official layout
[[ -f local_features_ros/data/weights/superpoint_lfr.pth ]] && W=(--weights local_features_ros/data/weights/superpoint_lfr.pth)
# SuperPoint (fp32 / bf16) vs the official frontend, ORB, SIFT at 640x480 and 320x240
# (docs/benchmarks.md, "SuperPoint, classical and the other learned methods").
"$PY" bench/bench_superpoint.py --runs ${RUNS:-15} --threads 2 --sizes 640x480,320x240 "${W[@]}" | tee "$OUT/superpoint.txt"
# Node: decode + pack + publish overhead (1000 kpts x 256-D) and publish -> ~/features latency.
"$PY" bench/bench_node.py --method superpoint "${W[@]}" --width 640 --height 480 --frames 20 | tee "$OUT/node_superpoint.txt"
"$PY" bench/bench_node.py --method orb --skip-e2e --iters 20 >/dev/null
"$PY" bench/bench_node.py --method orb --width 640 --height 480 --frames 20 | tee "$OUT/node_orb.txt"
# Every method, whole extractor at 640x480 (random weights where none are shipped: speed only).
"$PY" bench/bench_d2net_delf.py --size 640x480 --runs ${RUNS_HEAVY:-3} | tee "$OUT/d2net_delf.txt"
"$PY" bench/bench_lfnet_lift.py --size 640x480 --runs ${RUNS_HEAVY:-3} | tee "$OUT/lfnet_lift.txt"
