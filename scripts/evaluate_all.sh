#!/usr/bin/env bash
# Regenerate every evaluation number and figure of docs/evaluation.md from ../shared/data.
#
# The data (HPatches v_wormhole, Oxford affine, Strecha fountain-P11, TUM fr2/desk, KITTI 07) is
# research-use only: it is read from DATA and never copied into the repository.
# Usage: scripts/evaluate_all.sh [OUT_DIR]      (env: DATA, METHODS, LIGHTGLUE_METHODS, MAXKP,
#                                                      PY, OMP_NUM_THREADS)
# Every method runs with mutual NN; the LIGHTGLUE_METHODS (the methods with released LightGlue
# weights: aliked, disk, xfeat with LighterGlue) run a second time with --matcher lightglue
# (files <dataset>_<method>+lightglue.json).
# MAXKP (default 1000, the robot budget) caps every method's keypoints alike; MAXKP=-1 = method
# defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
OUT=${1:-out/eval}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ -z "${METHODS:-}" ]]; then
  METHODS="aliked disk xfeat orb sift akaze"
  # SuperPoint only with the project's own shipped weights (nothing is downloaded).
  [[ -f local_features_ros/data/weights/superpoint_lfr.pth ]] && METHODS="superpoint $METHODS"
fi
LIGHTGLUE_METHODS=${LIGHTGLUE_METHODS-aliked disk xfeat}
MAXKP=${MAXKP:-1000}
TUM_K="520.9,521.0,325.1,249.7"
TUM_D="0.2312,-0.7849,-0.0033,-0.0001,0.9172"
LF=("$PY" -m local_features_ros.cli)
mkdir -p "$OUT/plots"

run_method() {  # $1 method, $2 label (file suffix), rest: extra evaluate options
  local m=$1 label=$2; shift 2
  local E=(--method "$m" --set "max_keypoints=$MAXKP" "$@")
  echo "== $label"
  "${LF[@]}" evaluate hpatches "${E[@]}" "$DATA/hpatches" --json "$OUT/hpatches_$label.json"
  "${LF[@]}" evaluate hpatches "${E[@]}" "$DATA/oxford" --json "$OUT/oxford_$label.json"
  # Strecha: pairs (i, i+1) and (i, i+2) of the 11 views.
  "${LF[@]}" evaluate pairs "${E[@]}" "$DATA/strecha_fountain" --min-gap 1 --max-gap 2 \
    --json "$OUT/strecha_$label.json"
  # TUM fr2/desk pairs 0.2-0.5 s apart (10 Hz; shorter baselines leave t undetermined).
  "${LF[@]}" evaluate pairs "${E[@]}" "$DATA/tum_fr2desk" --intrinsics "$TUM_K" \
    --distortion "$TUM_D" --min-gap 2 --max-gap 5 --json "$OUT/tumpairs_$label.json"
  # VO through the node's frontend: KITTI 07 (160 frames) and TUM fr2/desk (20 frames).
  "${LF[@]}" evaluate sequence "${E[@]}" "$DATA/kitti07" --json "$OUT/kitti07_$label.json"
  "${LF[@]}" evaluate sequence "${E[@]}" "$DATA/tum_fr2desk" --intrinsics "$TUM_K" \
    --distortion "$TUM_D" --json "$OUT/tumvo_$label.json"
}

for m in $METHODS; do
  run_method "$m" "$m"
done
for m in $LIGHTGLUE_METHODS; do
  run_method "$m" "$m+lightglue" --matcher lightglue
done

# Combined figures (MMA curves, pose AUC bars, trajectories) + summary.md with every table.
"$PY" -m local_features_ros.evaluation.plots "$OUT" "$OUT/plots"
echo "results: $OUT/*.json, tables: $OUT/plots/summary.md"
