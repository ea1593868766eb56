#!/usr/bin/env bash
# Pack the real training frames for a short GPU run into .device/data (gitignored; copy it
# with the checkout to the GPU machine). Frames become grayscale JPEG (q 95): SuperPoint trains on
# gray images and the copy to the GPU machine stays small. Evaluation sets (HPatches, Oxford, Strecha) are
# never packed: they are not training data, and evaluation runs where ../shared/data is, afterwards.
# Usage: experiments/pack_superpoint_data.sh [KITTI_STEP]   (env: DATA, PY)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
STEP=${1:-1}
rm -rf .device/data && mkdir -p .device/data
"$PY" - "$DATA" "$STEP" <<'PYEOF'
import sys
from pathlib import Path

import cv2

data, step = Path(sys.argv[1]), int(sys.argv[2])
sets = {"kitti07": (data / "kitti07" / "image_0", step), "tum_fr2desk": (data / "tum_fr2desk" / "rgb", 1),
        "freiburg": (data / "freiburg", 1)}
total = 0
for name, (src, every) in sets.items():
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[::every]
    if not files:
        sys.exit(f"pack: no frames in {src}")
    dst = Path(".device/data") / name
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            sys.exit(f"pack: cannot read {f}")
        out = dst / (f.stem + ".jpg")
        cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        total += out.stat().st_size
    print(f"pack: {name}: {len(files)} frames")
print(f"pack: {total / 2**20:.1f} MiB in .device/data")
if total > 48 * 2**20:
    sys.exit("pack: over 48 MiB (keep the copy under 64 MiB with the code): raise KITTI_STEP")
PYEOF
