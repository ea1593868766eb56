"""Which half of a SuperPoint checkpoint limits its matching accuracy: detector or descriptor?

For every HPatches/Oxford-style pair, MMA@3 (mutual NN) of three combinations:

- ``sp``: the checkpoint's own keypoints and descriptors (what `local-features evaluate` reports),
- ``orb_kp+sp_desc``: ORB's 1000 keypoints described by the checkpoint's descriptor head,
- ``orb``: ORB's keypoints and descriptors (the project's bar).

If ``orb_kp+sp_desc`` beats ``orb`` while ``sp`` does not, the descriptor is good enough and the
detector (repeatability, localisation) is what is left to train; a pair where both lose points
at the descriptor. Used for the shipped weights' model card.

    OMP_NUM_THREADS=2 python experiments/bench_superpoint_detector_vs_descriptor.py \
        --weights local_features_ros/data/weights/superpoint_lfr.pth \
        ../shared/data/hpatches ../shared/data/oxford
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from local_features_ros.evaluation.hpatches import HPatchesConfig, NumpyFeatures, \
    evaluate_pair, extract_numpy, load_homography_pairs, mutual_nn_matches, read_image
from local_features_ros.registry import build_extractor


@torch.inference_mode()
def describe_at(sp, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """SuperPoint descriptors at given keypoints (original pixels), through the extractor's own
    preprocessing (resize to a multiple of 8) and descriptor sampling."""
    tensor, info = sp.prepare(image)
    _, desc = sp.run_network(tensor)
    kp = info.to_network(torch.from_numpy(keypoints).float().to(desc.device))
    w, h = info.net_size
    return sp.sample_descriptors(kp, desc, (w, h)).cpu().numpy()


def mma3(f0: NumpyFeatures, f1: NumpyFeatures, H: np.ndarray) -> float:
    return float(evaluate_pair(f0, f1, mutual_nn_matches(f0, f1), H, HPatchesConfig())["mma"]["3"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="HPatches/Oxford-style folders")
    ap.add_argument("--weights", default="", help="SuperPoint checkpoint (default: shipped)")
    ap.add_argument("--orb-features", type=int, default=1000)
    args = ap.parse_args(argv)
    sp = build_extractor("superpoint", weights=args.weights or None)
    orb = build_extractor("orb", max_keypoints=args.orb_features)
    rows = []
    for root in args.roots:
        for p in load_homography_pairs(root):
            i0, i1 = read_image(p.image0), read_image(p.image1)
            s0, s1 = extract_numpy(sp, i0), extract_numpy(sp, i1)
            o0, o1 = extract_numpy(orb, i0), extract_numpy(orb, i1)
            m0 = dataclasses.replace(o0, descriptors=describe_at(sp, i0, o0.keypoints))
            m1 = dataclasses.replace(o1, descriptors=describe_at(sp, i1, o1.keypoints))
            name = f"{Path(root).name}/{p.sequence}:{Path(p.image0).stem}-{Path(p.image1).stem}"
            rows.append((name, mma3(s0, s1, p.H_0to1), mma3(m0, m1, p.H_0to1),
                         mma3(o0, o1, p.H_0to1)))
    print(f"{'pair':<40} {'sp':>6} {'orb_kp+sp_desc':>15} {'orb':>6}")
    for name, *v in rows:
        print(f"{name:<40} {v[0]:6.3f} {v[1]:15.3f} {v[2]:6.3f}")
    mean = np.mean([r[1:] for r in rows], axis=0)
    print(f"{'mean':<40} {mean[0]:6.3f} {mean[1]:15.3f} {mean[2]:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
