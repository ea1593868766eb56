#!/usr/bin/env bash
# Regenerate every evaluation number and figure of the README from ../shared/data.
#
# The data (HPatches v_wormhole, Oxford affine, Strecha fountain-P11, TUM fr2/desk, KITTI 07) is
# research-use only: it is read from DATA and never copied into the repository.
# Usage: scripts/evaluate_all.sh [OUT_DIR]      (env: DATA, METHODS, PY, OMP_NUM_THREADS)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
OUT=${1:-out/eval}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ -z "${METHODS:-}" ]]; then
  METHODS="orb sift akaze"
  # SuperPoint only with the project's own shipped weights (nothing is downloaded).
  [[ -f local_features_ros/data/weights/superpoint_lfr.pth ]] && METHODS="superpoint $METHODS"
fi
TUM_K="520.9,521.0,325.1,249.7"
TUM_D="0.2312,-0.7849,-0.0033,-0.0001,0.9172"
LF=("$PY" -m local_features_ros.cli)
mkdir -p "$OUT/plots"

for m in $METHODS; do
  echo "== $m"
  "${LF[@]}" evaluate hpatches --method "$m" "$DATA/hpatches" --json "$OUT/hpatches_$m.json"
  "${LF[@]}" evaluate hpatches --method "$m" "$DATA/oxford" --json "$OUT/oxford_$m.json"
  # Strecha: pairs (i, i+1) and (i, i+2) of the 11 views.
  "${LF[@]}" evaluate pairs --method "$m" "$DATA/strecha_fountain" --min-gap 1 --max-gap 2 \
    --json "$OUT/strecha_$m.json"
  # TUM fr2/desk pairs 0.2-0.5 s apart (10 Hz; shorter baselines leave t undetermined).
  "${LF[@]}" evaluate pairs --method "$m" "$DATA/tum_fr2desk" --intrinsics "$TUM_K" \
    --distortion "$TUM_D" --min-gap 2 --max-gap 5 --json "$OUT/tumpairs_$m.json"
  # VO through the node's frontend: KITTI 07 (160 frames) and TUM fr2/desk (20 frames).
  "${LF[@]}" evaluate sequence --method "$m" "$DATA/kitti07" --json "$OUT/kitti07_$m.json"
  "${LF[@]}" evaluate sequence --method "$m" "$DATA/tum_fr2desk" --intrinsics "$TUM_K" \
    --distortion "$TUM_D" --json "$OUT/tumvo_$m.json"
done

# Combined figures (MMA curves, pose AUC bars, trajectories) + summary.md with every table.
"$PY" -m local_features_ros.evaluation.plots "$OUT" "$OUT/plots"
echo "results: $OUT/*.json, tables: $OUT/plots/summary.md"
