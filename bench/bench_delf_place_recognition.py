"""DELF place recognition before vs after training, on a rendered revisit scene: a table per seed.

    OMP_NUM_THREADS=1 python bench/bench_delf_place_recognition.py --seeds 0 1 2 3 4   # ~80 s/seed
    OMP_NUM_THREADS=1 python bench/bench_delf_place_recognition.py --seeds 0 \\
        --finetune-steps 1000 --attention-steps 1000                                  # longer run

The split, training and scoring are ``training/delf/place_eval.py`` (what
``test/training/test_delf_place_recognition_training.py`` asserts on one seed): database = 24 keyframes of
the mapping loop, queries = 48 frames of another loop with noise, training = place-labelled frames
of the mapping loop and four other loops under random gains. Each trained / untrained network is
scored on the same queries at every ``--gains`` value (0.85: the test's revisit under dimmer light;
1.0: viewpoint and noise only). "untrained" is the seeded initial network training starts from,
with its own PCA fitted the same way.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from local_features_ros.registry import build_extractor
from local_features_ros_training.config import merge
from local_features_ros_training.delf.place_eval import FAST_STEPS, QUERY_LOOP, SCALES, place_conf, render_queries, \
    render_revisit_split, retrieval_score, train_delf, untrained_export


def run_seed(seed: int, out: Path, args: argparse.Namespace) -> list[dict]:
    """Train once for ``seed`` and score both networks at every query gain."""
    width, height = (int(v) for v in args.size.split("x"))
    split = render_revisit_split(out / "data", seed=seed, width=width, height=height,
                                 query_gain=args.gains[0])
    conf = place_conf(split.train_root, seed)
    steps = {"finetune": merge(FAST_STEPS["finetune"], {"max_steps": args.finetune_steps}),
             "attention": merge(FAST_STEPS["attention"], {"max_steps": args.attention_steps})}
    if args.lr:
        steps["finetune"]["lr"] = args.lr
    t0 = time.perf_counter()
    before_w = untrained_export(conf, out / "untrained")
    run = train_delf(conf, out / "trained", **steps)
    train_s = time.perf_counter() - t0
    nets = {"untrained": build_extractor("delf", weights=before_w, scales=SCALES),
            "trained": build_extractor("delf", weights=run["export"], scales=SCALES)}
    rows = []
    for gain in args.gains:
        queries = render_queries(seed, width, height, len(split.queries), QUERY_LOOP, 12.0, gain)
        score = {k: retrieval_score(ex, split, queries=queries) for k, ex in nets.items()}
        rows.append({"seed": seed, "gain": gain, "places": split.num_places,
                     "train_images": split.num_train_images, "train_s": train_s,
                     **{f"{k}_{m}": getattr(s, m) for k, s in score.items()
                        for m in ("success_at_1", "mean_rank", "recall_at_5", "num_queries")}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--finetune-steps", type=int, default=FAST_STEPS["finetune"]["max_steps"])
    ap.add_argument("--attention-steps", type=int, default=FAST_STEPS["attention"]["max_steps"])
    ap.add_argument("--lr", type=float, default=0.0, help="finetune lr (0: the fast run's 1e-3)")
    ap.add_argument("--gains", type=float, nargs="+", default=[0.85, 1.0],
                    help="query brightness gains to score (the first one is the split's)")
    ap.add_argument("--size", default="128x96", help="image size WxH")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        for seed in args.seeds:
            rows += run_seed(seed, base / f"seed{seed}", args)
    print(f"DELF place recognition, {args.size}, finetune {args.finetune_steps} + attention "
          f"{args.attention_steps} steps, KeyframeDatabase votes (knn 5)")
    print("| seed | query gain | success@1 untrained -> trained | mean rank | recall@5 | queries "
          "| places / images | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['gain']:.2f} | {r['untrained_success_at_1']:.3f} -> "
              f"{r['trained_success_at_1']:.3f} | {r['untrained_mean_rank']:.2f} -> "
              f"{r['trained_mean_rank']:.2f} | {r['untrained_recall_at_5']:.3f} -> "
              f"{r['trained_recall_at_5']:.3f} | {r['trained_num_queries']} | "
              f"{r['places']} / {r['train_images']} | {r['train_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
