"""``local-features demo``: source -> feature_extractor -> collector, on real DDS (loopback only).

    local-features demo                      # synthetic camera, 30 frames, default method
    local-features demo --method orb --frames 60 --out demo_out
    local-features demo --bag recordings/cam  |  --images path/to/frames/

The source (synthetic camera, bag player or an image folder) and the node run as separate
processes in their own ROS domain; this process collects ``~/features``, ``~/matches``,
``~/overlay`` and ``/diagnostics``, prints a table every second and a summary at the end (rate,
latency = receive time - image stamp, keypoints, matches, inliers), and saves every overlay frame
as PNG under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

HELP = "run source -> feature_extractor -> collector and print rate, latency and match numbers"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="", help="default: superpoint with the shipped "
                        "weights if present, else orb")
    parser.add_argument("--weights", default="", help="local weights file for learned methods")
    parser.add_argument("--frames", type=int, default=30, help="frames to publish")
    parser.add_argument("--rate", type=float, default=10.0, help="source frames per second")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra node parameter overrides")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bag", help="replay this rosbag2 directory instead of rendering")
    src.add_argument("--images", help="publish the images of this folder instead of rendering")
    parser.add_argument("--out", default="demo_out", help="overlay PNGs and summary.json go here")
    parser.add_argument("--timeout", type=float, default=55.0, help="hard stop (seconds)")


def choose_method(method: str) -> tuple[str, str]:
    """(method, why): explicit choice, else superpoint with shipped weights, else orb."""
    from ...registry import default_weights

    if method:
        return method, "as requested"
    shipped = default_weights("superpoint")
    if shipped is not None:
        return "superpoint", f"shipped weights {shipped.name}"
    return "orb", ("no shipped SuperPoint weights "
                   "(local_features_ros/data/weights/superpoint_lfr.pth)")


def main(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ..diagnostics import make_collector, summarize
    from ..names import NODE_NAME
    from ..runner import build_plan, repo_or_share_dir, ros_env, run_plan

    method, why = choose_method(args.method)
    print(f"method: {method} ({why})")
    cfg = repo_or_share_dir() / "config" / f"{method}.yaml"
    config = cfg if cfg.is_file() else None
    sets = [f"weights={args.weights}"] if args.weights else []
    sets += ["publish_overlay=true", *args.set]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source_params = {"frames": args.frames, "rate": args.rate, "width": args.width,
                     "height": args.height}
    if args.images:
        source_params["image_dir"] = str(Path(args.images).resolve())
    plan = build_plan(config, sets, method=method, bag=args.bag,
                      synthetic=not args.bag, source_params=source_params,
                      workdir=out / "run")
    domain = random.randint(100, 199)
    env = ros_env(domain)
    print(f"ROS_DOMAIN_ID={domain} (loopback only); logs in {out / 'run'}")

    ns = "/" + plan.namespace.strip("/") if plan.namespace else ""
    base = f"{ns}/{NODE_NAME}"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    executor = SingleThreadedExecutor(context=context)
    last_print = [time.monotonic()]
    t_start = time.monotonic()
    node = None
    try:
        node = make_collector("demo_collector", f"{base}/features", f"{base}/matches",
                              f"{base}/overlay", out, context=context)
        executor.add_node(node)
        print(f"{'t[s]':>5} {'frames':>6} {'rate Hz':>8} {'lat med':>8} {'lat p90':>8} "
              f"{'kpts':>6} {'matches':>8} {'inliers':>8}")

        def poll() -> None:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now - last_print[0] >= 1.0:
                last_print[0] = now
                s = summarize(node.sorted_frames())
                print(f"{now - t_start:5.1f} {s.frames:6d} {s.rate_hz:8.2f} "
                      f"{s.latency_median_ms:8.1f} {s.latency_p90_ms:8.1f} "
                      f"{s.keypoints_mean:6.0f} {s.matches_mean:8.1f} {s.inliers_mean:8.1f}")
            if now - t_start > args.timeout:
                raise KeyboardInterrupt

        result = run_plan(plan, env, duration=0.0, drain_s=2.0, log_dir=out / "run", poll=poll)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # last messages in flight
            executor.spin_once(timeout_sec=0.05)
        summary = summarize(node.sorted_frames(), node.overlays_saved, node.last_diagnostics)
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)

    d = summary.node_diagnostics
    print(f"\nsummary ({method}, {result.elapsed_s:.1f} s, stop: {result.reason})")
    print(f"  frames received by collector: {summary.frames}/{args.frames if not args.bag else '?'}"
          f"   node: processed {d.get('frames_processed', '?')}, dropped "
          f"{d.get('frames_dropped', '?')}, bad input {d.get('bad_input_total', '?')}")
    print(f"  rate {summary.rate_hz:.2f} Hz   latency median {summary.latency_median_ms:.1f} ms, "
          f"p90 {summary.latency_p90_ms:.1f} ms   (node processing median "
          f"{d.get('processing_ms_median', '?')} ms)")
    print(f"  keypoints {summary.keypoints_mean:.0f}   matches {summary.matches_mean:.1f}   "
          f"inliers {summary.inliers_mean:.1f}   (means per frame)")
    print(f"  overlays saved: {summary.overlays_saved} in {out}/")
    (out / "summary.json").write_text(json.dumps({
        "method": method, "frames": summary.frames, "rate_hz": summary.rate_hz,
        "latency_median_ms": summary.latency_median_ms, "latency_p90_ms": summary.latency_p90_ms,
        "keypoints_mean": summary.keypoints_mean, "matches_mean": summary.matches_mean,
        "inliers_mean": summary.inliers_mean, "overlays_saved": summary.overlays_saved,
        "node_diagnostics": d, "returncodes": result.returncodes}, indent=2))
    node_rc = result.returncodes.get(NODE_NAME)
    if result.reason.startswith(f"{NODE_NAME} exited"):
        log = out / "run" / f"{NODE_NAME}.log"
        print(f"{NODE_NAME} failed (status {node_rc}); see {log}")
        return int(node_rc or 1)
    return 0 if summary.frames > 0 else 1
