"""``local-features bench``: extractor speed tables per method and image size.

What is measured (stages, memory, threads) is defined in ``local_features_ros.evaluation.speed``;
node end-to-end latency (decode + extract + match + publish) is ``bench/bench_node.py``.
``--set`` and ``--weights`` apply to every method of ``--methods`` (a classical method ignores the
weights); each method's settings are checked before the first timing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..conventions import ConfigError
from ._common import ExtractorOptions, add_extractor_arguments, extractor_options, run_command

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
    parser.add_argument("--markdown", metavar="OUT", help="write a markdown table here (the layout of docs/benchmarks.md)")


def prepare(args: argparse.Namespace) -> tuple[list[ExtractorOptions], list[tuple[int, int]]]:
    """Check every option and every method's settings before the first timing (errors: status 2).

    The models are built one after another in ``run_bench``, not here: the memory column is
    the growth of the process's peak RSS, which models built in advance would hide."""
    from ..evaluation.speed import parse_size

    if args.runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {args.runs}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = leave as is), got {args.threads}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    if not methods or not sizes:
        raise ConfigError("--methods and --sizes need at least one entry each")
    options = [extractor_options(args, method) for method in methods]
    for path in (args.json, args.markdown):
        if path:
            folder = Path(path).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"cannot create output folder {folder}: "
                                 f"{exc.strerror or exc}") from exc
    return options, sizes


def run_bench(args: argparse.Namespace,
              job: tuple[list[ExtractorOptions], list[tuple[int, int]]]) -> int:
    """Build each method in turn and time it at every size; write the JSON / Markdown."""
    import torch

    from ..evaluation.speed import benchmark_extractor, benchmark_image, markdown_table
    from .evaluate import jsonable

    options, sizes = job
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    records = []
    for opt in options:
        extractor = opt.build()
        for w, h in sizes:
            timing = benchmark_extractor(extractor, benchmark_image(w, h), args.runs, args.warmup)
            rec = {"method": opt.method, "size": f"{w}x{h}", "device": opt.device,
                   "precision": opt.precision, "timing": timing}
            records.append(rec)
            print(f"{opt.method:>12} {w}x{h}: whole {timing['whole']['median_ms']:.1f} ms "
                  f"(p90 {timing['whole']['p90_ms']:.1f}), {timing['keypoints']} keypoints")
        del extractor
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(jsonable(records), indent=1))
    table = markdown_table(records)
    if args.markdown:
        Path(args.markdown).expanduser().write_text(table)
    print(table)
    return 0


def main(args: argparse.Namespace) -> int:
    return run_command("bench", lambda: prepare(args), lambda job: run_bench(args, job))
