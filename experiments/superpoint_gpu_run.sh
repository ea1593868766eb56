#!/usr/bin/env bash
# Train SuperPoint end to end on a GPU machine within BUDGET seconds, then copy the weights and
# logs to $OUT. Prepare the training frames first (on any machine with ../shared/data):
#   bash experiments/pack_superpoint_data.sh
# then, on the GPU machine with the checkout and its .device/ folder, from the repository root:
#   bash experiments/superpoint_gpu_run.sh 480
# and evaluate the resulting superpoint.pth (scripts/evaluate_all.sh with METHODS=superpoint
# after copying it over local_features_ros/data/weights/superpoint_lfr.pth, or --weights).
# Works on a CPU machine too (slowly): the pipeline picks cuda when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-480}
OUT=${OUT:-out/gpu_run}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d .device/data ]] || { echo "no .device/data: run experiments/pack_superpoint_data.sh" >&2; exit 2; }
rm -rf runs/sp_gpu_run   # a run starts from scratch (a fresh machine has no runs/ anyway)
# DataLoader workers hand batches over in /dev/shm; containers often give it 64 MB, which 14
# workers with 5 MB batches overrun ("bus error"). Try to grow it, then check that the workers
# really deliver; with fewer, the stages run with WORKERS workers instead of failing.
shm=$(df -m /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')
if [[ "${shm:-0}" -lt 4096 ]]; then mount -o remount,size=16G /dev/shm 2>/dev/null || true; fi
WORKERS=$("$PY" - <<'PYEOF' 2>>"$OUT/env.txt"
import os, sys, torch
from torch.utils.data import DataLoader, Dataset
class Batches(Dataset):  # the size of a MagicPoint batch of 64 at 120x160 (+ labels)
    def __len__(self): return 10**6
    def __getitem__(self, i): return torch.rand(3, 120, 160)
want = min(14, max((os.cpu_count() or 2) - 2, 1))
for n in (want, 8, 4, 2):
    try:
        for k, _ in enumerate(DataLoader(Batches(), batch_size=64, num_workers=n)):
            if k == 3 * n: break
        print(n); break
    except Exception as exc:
        print(f"{n} workers failed: {exc}", file=sys.stderr)
else:
    print(0)
PYEOF
)
"$PY" - <<PYEOF 2>&1 | tee -a "$OUT/env.txt"
import os, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "cpus", os.cpu_count(),
      "/dev/shm MB", "$(df -m /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')", "workers", "$WORKERS")
PYEOF
set +e
"$PY" -m training.commands.train superpoint --stage pipeline \
  --config experiments/superpoint_pipeline_gpu.yaml --out runs/sp_gpu_run \
  --set pipeline.time_budget_s="$BUDGET" --set magicpoint.set.train.num_workers="$WORKERS" \
  --set joint.set.train.num_workers="$WORKERS" "${@:2}" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
set -e
cp runs/sp_gpu_run/pipeline.json "$OUT/" 2>/dev/null || true
cp runs/sp_gpu_run/superpoint.pth "$OUT/" 2>/dev/null || true
for s in magicpoint joint1 joint2; do
  cp "runs/sp_gpu_run/$s/metrics.csv" "$OUT/metrics_$s.csv" 2>/dev/null || true
done
exit "$rc"
