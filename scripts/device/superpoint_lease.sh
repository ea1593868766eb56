#!/usr/bin/env bash
# Train SuperPoint end to end on a leased GPU machine within BUDGET seconds, then copy the
# weights and logs to $OUT (the device tool brings $OUT back). Prepare here first:
#   bash scripts/device/pack_superpoint_data.sh
# then one device call, from the repository root:
#   run(command="bash scripts/device/superpoint_lease.sh 480", carry=[".device"], timeout_s=600)
# and evaluate the returned superpoint.pth here (scripts/evaluate_all.sh with METHODS=superpoint
# after copying it over local_features_ros/data/weights/superpoint_lfr.pth, or --weights).
# Works on a CPU machine too (slowly): the pipeline picks cuda when there is one.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUDGET=${1:-480}
OUT=${OUT:-out/lease}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d .device/data ]] || { echo "no .device/data: run scripts/device/pack_superpoint_data.sh" >&2; exit 2; }
"$PY" - <<'PYEOF' 2>&1 | tee "$OUT/env.txt"
import os, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "cpus", os.cpu_count())
PYEOF
set +e
"$PY" -m training.commands.train superpoint --stage pipeline \
  --config superpoint_pipeline_gpu_lease.yaml --out runs/sp_lease \
  --set pipeline.time_budget_s="$BUDGET" "${@:2}" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
set -e
cp runs/sp_lease/pipeline.json "$OUT/" 2>/dev/null || true
cp runs/sp_lease/superpoint.pth "$OUT/" 2>/dev/null || true
for s in magicpoint joint1 joint2; do
  cp "runs/sp_lease/$s/metrics.csv" "$OUT/metrics_$s.csv" 2>/dev/null || true
done
exit "$rc"
