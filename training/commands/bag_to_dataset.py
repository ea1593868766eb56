"""``local-features bag-to-dataset BAG --out DIR``: frames of a rosbag2 bag as a training set."""

from __future__ import annotations

import argparse
import json

HELP = "export camera frames of a rosbag2 bag (sqlite3/MCAP) to an image-folder dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 directory (metadata.yaml + .db3/.mcap)")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--topic", dest="topics", action="append", default=[],
                        help="image topic (Image or CompressedImage); repeatable; default: all")
    parser.add_argument("--start", type=float, default=None, help="start time in seconds")
    parser.add_argument("--end", type=float, default=None, help="end time in seconds (exclusive)")
    parser.add_argument("--relative", action="store_true",
                        help="--start/--end are seconds from the bag's start (default: absolute)")
    parser.add_argument("--min-dt", type=float, default=0.0,
                        help="keep a frame only this many seconds after the last kept one")
    parser.add_argument("--min-motion", type=float, default=0.0,
                        help="keep a frame only if it moved this much since the last kept one")
    parser.add_argument("--motion", choices=("diff", "flow"), default="diff",
                        help="motion measure: mean abs gray difference, or mean flow in pixels")
    parser.add_argument("--format", default="png", choices=("png", "jpg"), help="image format")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all)")


def main(args: argparse.Namespace) -> int:
    from ..data.bag_export import export_bag

    r = export_bag(args.bag, args.out, args.topics or None, args.start, args.end, args.relative,
                   args.min_dt, args.min_motion, args.motion, args.format, args.max_frames)
    print(json.dumps({"frames": r.frames, "read": r.read, "skipped": r.skipped,
                      "reasons": r.reasons, "dropped_time": r.dropped_time,
                      "dropped_motion": r.dropped_motion, "out": r.out_dir}))
    return 0
