"""``local-features run``: the launch file's nodes without ``ros2 launch`` (same YAML, same remaps).

    local-features run config/extractor.yaml --synthetic --duration 20
    local-features run config/orb.yaml --bag recordings/cam --set max_keypoints=500
    local-features run config/extractor.yaml --namespace cam0 --image /cam0/image_raw \\
        --camera-info /cam0/camera_info           # live camera already publishing

A bag is replayed whole and in order (the player waits for the node's ``~/frame_done``), on the
bag's clock, as fast as the node takes it unless ``--rate`` asks for a recorded-speed factor.
Exit status: 0 = every frame processed (or a live run stopped by ``--duration``); 1 = a replay
that processed nothing or lost frames, or a source that failed; 2 = configuration error; the
node's own status when it exits by itself.

Launch argument <-> option table: ``local_features_ros.ros.runner.LAUNCH_ARGS``.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runner import RunPlan, RunResult

HELP = "start the feature_extractor node (and a bag/synthetic source) from a parameter YAML"

logger = logging.getLogger(__name__)


#: Frames per second of ``--synthetic`` when ``--rate`` is not given.
SYNTHETIC_RATE = 10.0
#: Seconds a replay waits after the node subscribed. Other participants (a user's subscriber to
#: ``~/features``) can discover the node's publishers a second or more after the replay's own
#: player does, on a loaded machine up to one DDS announcement period (3 s); frames published
#: before that never reach them.
REPLAY_START_DELAY = 3.0
LIVE_START_DELAY = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..flow_control import DEFAULT_ACK_TIMEOUT_S
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
                        help=opts["use_sim_time"].description + " (a --bag run always does, "
                        "unless --wall-clock)")
    parser.add_argument("--wall-clock", action="store_true",
                        help="--bag: keep the node on wall time (no /clock from the bag)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bag", help="replay this rosbag2 directory as the image source")
    src.add_argument("--synthetic", action="store_true", help="rendered camera as the source")
    parser.add_argument("--rate", type=float, default=None,
                        help=f"--synthetic: frames per second (default {SYNTHETIC_RATE:g}); "
                        "--bag: playback speed factor of the recorded timing (default 0 = as "
                        "fast as the node takes it; never faster than the node)")
    parser.add_argument("--frames", type=int, default=0,
                        help="synthetic camera: frames to publish then stop (default 0 = until "
                        "--duration)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (default 0 = until Ctrl-C or the "
                        "source's end)")
    parser.add_argument("--start-delay", type=float, default=None,
                        help="seconds the source waits after the node subscribed, so that DDS "
                        "discovery settles and subscribers started before the run (a recorder, "
                        f"your VO node) get the first frames too (default: {REPLAY_START_DELAY:g}"
                        f" with --bag, {LIVE_START_DELAY:g} with --synthetic)")
    parser.add_argument("--ack-timeout", type=float, default=DEFAULT_ACK_TIMEOUT_S,
                        help="--bag: give up when the node has finished no frame for this many "
                        "seconds (default: %(default)s)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: "
                        "inherited, else random 100-199); DDS stays on loopback")
    parser.add_argument("--log-dir", default=None, help="write each process's output here "
                        "(default: the terminal)")
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

    def fail(text: str, status: int) -> int:
        print(f"local-features run: {'error' if status == 2 else 'failed'}: {text}",
              file=sys.stderr)
        return status

    if args.print_config:
        try:
            print(default_params_yaml(args.print_config,
                                      default_file=args.print_config == "auto"), end="")
        except (ConfigError, ImportError) as exc:
            return fail(str(exc), 2)
        return 0
    rate = args.rate if args.rate is not None else (SYNTHETIC_RATE if args.synthetic else 0.0)
    source_params = {"rate": rate, "frames": args.frames} if args.synthetic else None
    log_dir = Path(args.log_dir) if args.log_dir else None
    start_delay = args.start_delay if args.start_delay is not None else (
        REPLAY_START_DELAY if args.bag else LIVE_START_DELAY)
    try:
        if args.synthetic and rate <= 0:
            raise ConfigError(f"--rate must be > 0 frames per second with --synthetic, got "
                              f"{rate:g}")
        if args.duration < 0 or args.frames < 0:
            raise ConfigError("--duration and --frames must be >= 0")
        plan = build_plan(args.config, args.set, namespace=args.namespace, image=args.image,
                          camera_info=args.camera_info, method=args.method,
                          use_sim_time=args.use_sim_time, bag=args.bag, synthetic=args.synthetic,
                          source_params=source_params, bag_rate=rate if args.bag else 0.0,
                          start_delay=start_delay, wall_clock=args.wall_clock,
                          ack_timeout=args.ack_timeout)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # what the node would refuse (it exits 2 for these), or a bag that cannot be replayed
        return fail(str(exc), 2)
    env = ros_env(args.domain_id)
    method = str(plan.params.get("method"))
    print(f"method: {method}, {weights_to_load(method, str(plan.params.get('weights', '')))}")
    print(f"params: {plan.params_file}  (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, loopback only)")
    for note in plan.notes:
        print(f"note: {note}")
    for p in plan.processes:
        print(f"  {p.name}: {' '.join(p.argv)}")
    result = run_plan(plan, env, duration=args.duration, log_dir=log_dir,
                      drain_s=1.0 if plan.report_file is not None else 3.0)
    print(f"stopped after {result.elapsed_s:.1f} s ({result.reason}); exit status: " +
          ", ".join(f"{k}={v}" for k, v in result.returncodes.items()))
    if result.reason.startswith(f"{NODE_NAME} exited"):
        rc = int(result.returncodes.get(NODE_NAME) or 1)
        why = node_failure_reason(log_dir / f"{NODE_NAME}.log") if log_dir else None
        print(f"{NODE_NAME} failed (exit status {rc}): "
              f"{why or 'see its output above'}", file=sys.stderr)
        return rc
    if result.reason == "interrupted":
        return 130
    if plan.report_file is None:
        return 0
    return replay_verdict(plan, result)


def replay_verdict(plan: "RunPlan", result: "RunResult") -> int:
    """One line on how the replay went, and the exit status that says the same."""
    import sys

    from ..flow_control import ReplayReport

    source = next(s.name for s in plan.processes if s.role == "source")
    rc = result.returncodes.get(source)
    report = ReplayReport.read(plan.report_file)
    if report is None:
        print(f"local-features run: failed: {source} wrote no replay report (exit status "
              f"{rc}); see its output above", file=sys.stderr)
        return 2 if rc == 2 else 1
    rate = report.processed / report.elapsed_s if report.elapsed_s > 0 else 0.0
    counts = (f"{report.processed} processed, {report.bad_input} bad input, {report.dropped} "
              f"dropped, {report.unacknowledged} unanswered of {report.published} images sent "
              f"({report.elapsed_s:.1f} s, {rate:.2f} frames/s)")
    if result.reason == "duration":
        print(f"replay stopped by --duration: {counts}")
        return 0
    problems = []
    if report.stalled:
        problems.append(report.reason)
    if report.published == 0:
        problems.append("no image was sent (empty topic?)")
    elif report.processed == 0:
        problems.append("the node processed no frame")
    if report.dropped or report.unacknowledged:
        problems.append("frames were lost")
    if problems:
        print(f"local-features run: failed: {'; '.join(problems)}: {counts}", file=sys.stderr)
        return 1
    extra = " (the node's log names the bad input)" if report.bad_input else ""
    print(f"ok: {counts}{extra}")
    return 0
