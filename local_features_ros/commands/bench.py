"""``local-features bench``: extractor speed tables per method and image size.

What is measured (stages, memory, threads) is defined in ``local_features_ros.evaluation.speed``;
node end-to-end latency (decode + extract + match + publish) is ``bench/bench_node.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from ._common import add_extractor_arguments, parse_settings

logger = logging.getLogger(__name__)

HELP = "time extractors per method and image size (median/p90 ms, memory, threads)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default="superpoint,orb,sift",
                        help="comma-separated registry methods or peers (akaze)")
    parser.add_argument("--sizes", default="320x240,640x480,1280x960", help="WxH list")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per stage")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    add_extractor_arguments(parser, method=False)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0 = leave as is)")
    parser.add_argument("--json", metavar="OUT", help="write all records here")
    parser.add_argument("--markdown", metavar="OUT", help="write a README table here")


def main(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.speed import benchmark_extractor, benchmark_image, markdown_table, parse_size
    from .evaluate import build_method, jsonable

    if args.runs < 1:
        raise ValueError("--runs must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    conf = parse_settings(args.settings)
    records = []
    for method in methods:
        extractor = build_method(method, args.weights, args.device, args.precision, conf)
        for w, h in sizes:
            timing = benchmark_extractor(extractor, benchmark_image(w, h), args.runs, args.warmup)
            rec = {"method": method, "size": f"{w}x{h}", "device": str(args.device),
                   "precision": args.precision, "timing": timing}
            records.append(rec)
            print(f"{method:>12} {w}x{h}: whole {timing['whole']['median_ms']:.1f} ms "
                  f"(p90 {timing['whole']['p90_ms']:.1f}), {timing['keypoints']} keypoints")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(jsonable(records), indent=1))
    table = markdown_table(records)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    print(table)
    return 0
