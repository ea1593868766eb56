"""``local-features run``: the launch file's nodes without ``ros2 launch`` (same YAML, same remaps).

    local-features run config/extractor.yaml --synthetic --duration 20
    local-features run config/orb.yaml --bag recordings/cam --set max_keypoints=500
    local-features run config/extractor.yaml --namespace cam0 --image /cam0/image_raw \\
        --camera-info /cam0/camera_info           # live camera already publishing

Launch argument <-> option table: ``local_features_ros.ros.runner.LAUNCH_ARGS``.
"""

from __future__ import annotations

import argparse
import logging

HELP = "start the feature_extractor node (and a bag/synthetic source) from a parameter YAML"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runner import DEFAULT_PARAMS_FILE, LAUNCH_ARGS

    opts = {a.name: a for a in LAUNCH_ARGS}
    parser.add_argument("config", nargs="?", default=DEFAULT_PARAMS_FILE,
                        help=f"{opts['params_file'].description} (launch arg params_file)")
    parser.add_argument("--method", default=opts["method"].default, help=opts["method"].description)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a node parameter (dotted name, e.g. matcher.ratio=0.9)")
    parser.add_argument("--namespace", default=opts["namespace"].default,
                        help=opts["namespace"].description)
    parser.add_argument("--image", default="", help=opts["image"].description +
                        " (default: node-relative 'image', or the bag's image topic)")
    parser.add_argument("--camera-info", default="", help=opts["camera_info"].description)
    parser.add_argument("--use-sim-time", action="store_true",
                        help=opts["use_sim_time"].description)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bag", help="replay this rosbag2 directory as the image source")
    src.add_argument("--synthetic", action="store_true", help="rendered camera as the source")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="synthetic camera fps (bag: playback speed factor 1.0)")
    parser.add_argument("--frames", type=int, default=0,
                        help="synthetic camera: frames to publish then stop (0 = until --duration)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (0 = until Ctrl-C or source end)")
    parser.add_argument("--start-delay", type=float, default=1.0,
                        help="seconds the source waits after the node subscribed (DDS "
                        "discovery settles; frames sent earlier can be lost)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: "
                        "inherited, else random 100-199); DDS stays on loopback")
    parser.add_argument("--log-dir", default=None, help="write each process's output here")
    parser.add_argument("--print-config", metavar="METHOD", default=None,
                        help="print METHOD's commented default parameter YAML and exit "
                        "(how config/<method>.yaml is made)")


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ...conventions import ConfigError
    from ..names import NODE_NAME
    from ..param_files import default_params_yaml
    from ..runner import build_plan, node_failure_reason, ros_env, run_plan
    from ..validate import weights_to_load

    if args.print_config:
        print(default_params_yaml(args.print_config), end="")
        return 0
    source_params = {"rate": args.rate, "frames": args.frames} if args.synthetic else None
    try:
        plan = build_plan(args.config, args.set, namespace=args.namespace, image=args.image,
                          camera_info=args.camera_info, method=args.method,
                          use_sim_time=args.use_sim_time, bag=args.bag, synthetic=args.synthetic,
                          source_params=source_params,
                          bag_rate=args.rate if args.bag and args.rate != 10.0 else 1.0,
                          start_delay=args.start_delay)
    except ConfigError as exc:  # what the node would refuse (it exits 2 for these)
        print(f"local-features run: error: {exc}", file=sys.stderr)
        return 2
    env = ros_env(args.domain_id)
    method = str(plan.params.get("method"))
    print(f"method: {method}, {weights_to_load(method, str(plan.params.get('weights', '')))}")
    print(f"params: {plan.params_file}  (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, loopback only)")
    for p in plan.processes:
        print(f"  {p.name}: {' '.join(p.argv)}")
    log_dir = Path(args.log_dir) if args.log_dir else None
    result = run_plan(plan, env, duration=args.duration, log_dir=log_dir)
    print(f"stopped after {result.elapsed_s:.1f} s ({result.reason}); exit status: " +
          ", ".join(f"{k}={v}" for k, v in result.returncodes.items()))
    if result.reason.startswith(f"{NODE_NAME} exited"):
        rc = int(result.returncodes.get(NODE_NAME) or 1)
        why = node_failure_reason(log_dir / f"{NODE_NAME}.log") if log_dir else None
        print(f"{NODE_NAME} failed (exit status {rc}): "
              f"{why or 'see its output above'}", file=sys.stderr)
        return rc
    return 0
