"""``local-features odometry``: the ``visual_odometry`` node on a recording, trajectory out.

    local-features odometry --stereo ../shared/data/kitti_stereo --trajectory traj.txt
    local-features odometry --rgbd path/to/tum_sequence --method orb
    local-features odometry --bag stereo_bag --mode stereo --set sync_slop=0.005

What ``ros2 launch local_features_ros odometry.launch.py`` starts, without ``ros2 launch``: the
node (``config/odometry.yaml`` + ``--set``) in its own process on loopback-only DDS, fed by the bag
player with flow control (every pair, in order, as fast as the node takes it; bag clock). A
KITTI or TUM folder is first turned into a bag by ``images-to-bag``. This process records
``~/odometry`` and writes one line per frame to ``--trajectory``: the row-major 3x4
``T_world_cam`` of the left/colour camera, world = the first camera (KITTI ``poses.txt``).
Exit status: 0 = every pair processed, 1 = frames lost or none processed, 2 = configuration.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HELP = "run the visual_odometry node on a stereo / RGB-D recording and write its trajectory"

#: Topics ``images-to-bag`` writes, per mode: (image 0, image 1, camera_info 0, camera_info 1).
BAG_TOPICS = {
    "stereo": ("/stereo/left/image_raw", "/stereo/right/image_raw", "/stereo/left/camera_info",
               "/stereo/right/camera_info"),
    "rgbd": ("/camera/rgb/image_raw", "/camera/depth/image", "/camera/rgb/camera_info", None),
}
#: The node's inputs, in the same order.
NODE_INPUTS = {
    "stereo": ("left/image_rect", "right/image_rect", "left/camera_info", "right/camera_info"),
    "rgbd": ("rgb/image", "depth/image", "rgb/camera_info", None),
}
PARAMS_FILE = "config/odometry.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--stereo", metavar="DIR", help="KITTI layout: image_l/ + image_r/ (or "
                     "image_0/ + image_1/) with calib.txt")
    src.add_argument("--rgbd", metavar="DIR", help="TUM layout: rgb/, depth/ (+ intrinsics, "
                     "see images-to-bag --intrinsics / --camera)")
    src.add_argument("--bag", help="a rosbag2 with the topics images-to-bag writes (--mode)")
    parser.add_argument("--mode", choices=("stereo", "rgbd"), default=None,
                        help="with --bag: which pair of topics (default: stereo)")
    parser.add_argument("--method", default="", help="feature method (default: the node's, "
                        "auto = the hardware's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="node parameter override (config/odometry.yaml lists them)")
    parser.add_argument("--trajectory", default="", help="write the KITTI-format trajectory here")
    parser.add_argument("--intrinsics", default="", help="--rgbd: fx,fy,cx,cy (passed to "
                        "images-to-bag)")
    parser.add_argument("--camera", default="", help="--rgbd: tum-fr1 | tum-fr2 | tum-fr3")
    parser.add_argument("--log-dir", default=None, help="process logs and the converted bag "
                        "(default: a temporary folder)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: inherited, else random); loopback only")


def main(args: argparse.Namespace) -> int:
    from ...conventions import ConfigError

    try:
        return _main(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"local-features odometry: error: {exc}", file=sys.stderr)
        return 2


def _to_bag(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """(bag, mode): the given bag, or the folder converted by ``images-to-bag``."""
    from ...cli import main as cli_main
    from ...conventions import ConfigError

    if args.bag:
        return Path(args.bag), args.mode or "stereo"
    mode = "stereo" if args.stereo else "rgbd"
    folder = Path(args.stereo or args.rgbd)
    bag = work / "recording_bag"
    argv = ["images-to-bag", str(folder), str(bag), "--overwrite",
            "--layout", "kitti" if mode == "stereo" else "tum"]
    argv += ["--intrinsics", args.intrinsics] if args.intrinsics else []
    argv += ["--camera", args.camera] if args.camera else []
    if cli_main(argv) != 0:
        raise ConfigError(f"cannot convert {folder} (images-to-bag said why above)")
    return bag, mode


def _main(args: argparse.Namespace) -> int:
    import os
    import random

    from ...bags import list_topics
    from ...conventions import ConfigError
    from ...odometry.datasets import write_kitti_trajectory
    from ..flow_control import ReplayReport
    from ..runner import (apply_overrides, load_node_params, module_argv, parse_set,
                          repo_or_share_dir, ros_args, ros_env, run_plan, write_params_file,
                          ProcessSpec, RunPlan)

    work = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="lfr_vo_"))
    work.mkdir(parents=True, exist_ok=True)
    bag, mode = _to_bag(args, work)
    topics = list_topics(bag)
    want = [t for t in BAG_TOPICS[mode] if t]
    missing = [t for t in want if t not in topics]
    if missing:
        raise ConfigError(f"bag {bag} lacks {', '.join(missing)} for mode {mode} (it has "
                          f"{', '.join(sorted(topics))})")
    overrides = parse_set(args.set)
    overrides.update(mode=mode, process_every_frame=True, reliable_input=True,
                     use_sim_time=True)
    if args.method:
        overrides["method"] = args.method
    flat = apply_overrides(load_node_params(repo_or_share_dir() / PARAMS_FILE,
                                            node="visual_odometry"), overrides)
    params = write_params_file(flat, work / "visual_odometry.params.yaml", node="visual_odometry")
    remaps = [(n, t) for n, t in zip(NODE_INPUTS[mode], BAG_TOPICS[mode]) if n and t]
    node = ProcessSpec("visual_odometry", module_argv("local_features_ros.ros.odometry_node")
                       + ros_args(params, "", remaps), "node")
    report = work / "replay_report.json"
    player = ProcessSpec("bag_player", module_argv("local_features_ros.ros.bag_player") + [
        str(bag), "--rate", "0", "--topics", *want, "--wait-subscribers", "1",
        "--wait-timeout", "120", "--start-delay", "2", "--done-topic",
        "/visual_odometry/frame_done", "--window", "4", "--report", str(report), "--clock"],
        "source")
    plan = RunPlan([node, player], params, flat, BAG_TOPICS[mode][0], BAG_TOPICS[mode][2] or "",
                   report_file=report)
    domain = args.domain_id if args.domain_id is not None else random.randint(100, 199)
    env = ros_env(domain)
    os.environ.update(ROS_LOCALHOST_ONLY="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    print(f"odometry: {mode} from {bag}; params {params}; ROS_DOMAIN_ID={domain} (loopback); "
          f"logs in {work}")
    poses, result = _record(plan, env, domain, work)
    rep = ReplayReport.read(report)
    if result.reason.startswith("visual_odometry exited"):
        from ..runner import node_failure_reason

        why = node_failure_reason(work / "visual_odometry.log") or "see its log"
        print(f"visual_odometry failed (exit status {result.returncodes.get('visual_odometry')})"
              f": {why}", file=sys.stderr)
        return int(result.returncodes.get("visual_odometry") or 1)
    if args.trajectory:
        write_kitti_trajectory(Path(args.trajectory), [p for _, p in sorted(poses.items())])
    if rep is None:
        print("local-features odometry: failed: the player wrote no report", file=sys.stderr)
        return 1
    pairs = rep.published // 2
    line = (f"{len(poses)} poses from {pairs} pairs: {rep.processed // 2} processed, "
            f"{rep.bad_input // 2} bad input, {rep.dropped} images dropped, "
            f"{rep.unacknowledged} unanswered ({rep.elapsed_s:.1f} s, "
            f"{rep.processed / 2 / max(rep.elapsed_s, 1e-9):.2f} pairs/s)")
    if rep.processed == 0 or rep.dropped or rep.unacknowledged or rep.stalled or \
            len(poses) < rep.processed // 2:
        print(f"local-features odometry: failed: {line}", file=sys.stderr)
        return 1
    print(f"ok: {line}" + (f"; trajectory: {args.trajectory}" if args.trajectory else ""))
    return 0


def _record(plan, env, domain: int, work: Path):
    """Run the plan while a collector records ``~/odometry`` (stamp ns -> 4x4 pose)."""
    import numpy as np
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from scipy.spatial.transform import Rotation

    from ..runner import run_plan

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("odometry_collector", context=ctx)
    poses: dict[int, np.ndarray] = {}

    def on_odom(msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        T[:3, 3] = [p.x, p.y, p.z]
        poses[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = T

    node.create_subscription(Odometry, "/visual_odometry/odometry", on_odom,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    seen = {"t": None}

    def ready() -> bool:
        if seen["t"] is None and node.count_publishers("/visual_odometry/odometry"):
            seen["t"] = time.monotonic()
        return seen["t"] is not None and time.monotonic() - seen["t"] > 0.5

    try:
        result = run_plan(plan, env, drain_s=2.0, log_dir=work,
                          poll=lambda: ex.spin_once(timeout_sec=0.05), sources_when=ready,
                          ready_timeout=180.0)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return poses, result


