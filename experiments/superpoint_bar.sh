#!/usr/bin/env bash
# Does a SuperPoint checkpoint meet the bar for shipping it? Beat ORB (1000 features, mutual NN) on
# matching accuracy at 3 px and homography correctness at 3 px (HPatches, Oxford) and on pose
# AUC@10 (Strecha fountain, TUM fr2/desk pairs), all on ../shared/data, same protocol as the
# docs/evaluation.md tables (scripts/evaluate_all.sh). Prints one table with a verdict per criterion.
# Usage: experiments/superpoint_bar.sh [WEIGHTS] [OUT_DIR]   (default: the shipped weights; env DATA, PY)
set -euo pipefail
cd "$(dirname "$0")/.."
WEIGHTS=${1:-local_features_ros/data/weights/superpoint_lfr.pth}
OUT=${2:-out/bar}
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
LF=("$PY" -m local_features_ros.cli)
TUM=(--intrinsics 520.9,521.0,325.1,249.7 --distortion 0.2312,-0.7849,-0.0033,-0.0001,0.9172)
for m in superpoint orb; do
  w=(); [[ $m == superpoint ]] && w=(--weights "$WEIGHTS")
  [[ $m == orb && -f "$OUT/tum_orb.json" ]] && continue  # ORB does not change between checks
  "${LF[@]}" evaluate hpatches --method $m "${w[@]}" "$DATA/hpatches" --json "$OUT/hpatches_$m.json"
  "${LF[@]}" evaluate hpatches --method $m "${w[@]}" "$DATA/oxford" --json "$OUT/oxford_$m.json"
  "${LF[@]}" evaluate pairs --method $m "${w[@]}" "$DATA/strecha_fountain" --min-gap 1 --max-gap 2 \
    --json "$OUT/strecha_$m.json"
  "${LF[@]}" evaluate pairs --method $m "${w[@]}" "$DATA/tum_fr2desk" "${TUM[@]}" --min-gap 2 \
    --max-gap 5 --json "$OUT/tum_$m.json"
done 2>&1 | grep -v "^INFO"
"$PY" - "$OUT" "$WEIGHTS" <<'PYEOF'
import json, sys
out, weights = sys.argv[1], sys.argv[2]
rows = [("HPatches MMA@3", "hpatches", ("mma", "3")), ("HPatches H-acc@3", "hpatches", ("homography_accuracy", "3")),
        ("Oxford MMA@3", "oxford", ("mma", "3")), ("Oxford H-acc@3", "oxford", ("homography_accuracy", "3")),
        ("Strecha pose AUC@10", "strecha", ("pose_auc", "10")), ("TUM pairs pose AUC@10", "tum", ("pose_auc", "10"))]
print(f"\nSuperPoint {weights} vs ORB (1000 features), mutual NN\n")
print("| criterion | SuperPoint | ORB | verdict |\n|---|---|---|---|")
wins = 0
for name, ds, (k1, k2) in rows:
    sp, orb = (json.load(open(f"{out}/{ds}_{m}.json"))[k1][k2] for m in ("superpoint", "orb"))
    verdict = "beats" if sp > orb else ("ties" if sp == orb else "LOSES")
    wins += verdict != "LOSES"
    print(f"| {name} | {sp:.3f} | {orb:.3f} | {verdict} |")
print(f"\n{wins}/{len(rows)} criteria not lost (a tie at 1.0 cannot be beaten)")
PYEOF
