"""``local-features demo``: source -> feature_extractor -> collector, on real DDS (loopback only).

    local-features demo                      # synthetic camera, 30 frames, default method
    local-features demo --method orb --frames 60 --out demo_out
    local-features demo --bag recordings/cam  |  --images path/to/frames/ [--loop]

The source (synthetic camera, bag player or an image folder) and the node run as separate
processes in their own ROS domain; this process collects ``~/features``, ``~/matches``,
``~/overlay`` and ``/diagnostics``, prints a table every second and a summary at the end (rate,
latency = receive time - image stamp, keypoints, matches, inliers), and saves every overlay frame
as PNG under ``--out`` (emptied of the previous run's files first).

What makes the numbers trustworthy:
- the parameters are checked before anything starts (``ros/validate.py``: the node's own rules),
  and a node that still fails at startup has its one-line reason printed here, with its exit
  status as the demo's;
- the source starts only once this collector sees the node's publishers (reliable outputs, so
  nothing published after that is lost), and the run ends when the node's diagnostics show every
  received frame accounted for and the collector holds every processed one; the last line says
  why when counts differ;
- ``--images``/``--bag`` replay each frame once, in order, with flow control: the source sends
  the next image only when the node has finished the previous one (``ros/flow_control.py``), so
  nothing is dropped however slow the method, and consecutive overlays show consecutive images.
  ``--rate`` 0 (their default) plays as fast as the node takes it; a bag runs on its own clock.

Exit status: 0 when every frame was processed and collected (a synthetic live run: every
processed frame collected), 1 when frames were lost or nothing was processed, 2 for a
configuration error, the node's status when it fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..flow_control import ReplayReport

HELP = "run source -> feature_extractor -> collector and print rate, latency and match numbers"

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 30
DEFAULT_SIZE = (320, 240)
#: Frames per second of the synthetic camera when ``--rate`` is not given.
SYNTHETIC_RATE = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="", help="default: the node's default (aliked, "
                        "released weights) if installed, else superpoint (shipped), else orb")
    parser.add_argument("--weights", default="", help="local weights file for learned methods")
    parser.add_argument("--frames", type=int, default=None,
                        help=f"frames to publish (default: {DEFAULT_FRAMES} synthetic frames; "
                        f"--images: every readable image once; --images --loop: {DEFAULT_FRAMES})")
    parser.add_argument("--rate", type=float, default=None, help="synthetic camera: frames per "
                        f"second (default {SYNTHETIC_RATE:g}, a live camera: the node drops "
                        "frames it cannot keep up with); --images: frames per second, --bag: "
                        "speed factor of the recorded timing (default 0 = as fast as the node "
                        "takes them; never faster than the node, nothing dropped)")
    parser.add_argument("--width", type=int, default=None, help="synthetic frames only "
                        f"(default {DEFAULT_SIZE[0]}; images and bags keep their size)")
    parser.add_argument("--height", type=int, default=None, help="synthetic frames only "
                        f"(default {DEFAULT_SIZE[1]})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="node parameter override (checked against the node's parameter "
                        "table, e.g. max_keypoints=500)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bag", help="replay this rosbag2 directory instead of rendering")
    src.add_argument("--images", help="publish the images of this folder (sorted by name, each "
                     "once) instead of rendering")
    src.add_argument("--stereo", metavar="DIR", help="visual odometry on a KITTI-layout stereo "
                     "folder (local-features odometry; trajectory in --out)")
    src.add_argument("--rgbd", metavar="DIR", help="visual odometry on a TUM-layout RGB-D "
                     "folder (local-features odometry; trajectory in --out)")
    parser.add_argument("--loop", action="store_true", help="--images: start over after the last "
                        "image (until --frames)")
    parser.add_argument("--out", default="demo_out", help="overlay PNGs and summary.json go here "
                        "(the previous run's overlays are removed first)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after this many "
                        "seconds (default 0 = no limit: the run ends when the source has sent "
                        "everything and the node has finished it)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: random 100-199); DDS stays on loopback")


def choose_method(method: str, device: str = "auto") -> tuple[str, str]:
    """(method, why): an explicit choice, else the node's default for this hardware
    (``hardware.choose_method``: XFeat on a CPU, ALIKED on a CUDA GPU, ORB without weights)."""
    from ...hardware import AUTO_METHOD
    from ...hardware import choose_method as hardware_choice

    if method and method != AUTO_METHOD:
        return method, "as requested"
    choice = hardware_choice(device)
    return choice.method, f"method auto: {choice.reason}"


def clear_previous_run(out: Path) -> int:
    """Remove only what a demo run writes (overlay PNGs, summary.json, run/ logs and params)."""
    removed = 0
    victims = list(out.glob("overlay_*.png")) + [out / "summary.json"]
    run = out / "run"
    if run.is_dir():
        victims += list(run.glob("*.log")) + list(run.glob("*.params.yaml"))
    for p in victims:
        if p.is_file():
            p.unlink()
            removed += 1
    return removed


def scan_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(readable, unreadable) image files of ``folder``, in the order the camera publishes."""
    import cv2

    from ..synthetic_camera import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    good, bad = [], []
    for p in files:
        (good if cv2.imread(str(p), cv2.IMREAD_COLOR) is not None else bad).append(p)
    if not good:
        raise FileNotFoundError(f"no readable images ({', '.join(IMAGE_SUFFIXES)}) in {folder}"
                                + (f" ({len(bad)} unreadable)" if bad else ""))
    return good, bad


def _has(sets: list[str], key: str) -> bool:
    from ...config import parse_settings

    return key in parse_settings(sets)


def main(args: argparse.Namespace) -> int:
    from ...conventions import ConfigError

    try:
        return _main(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # the node would refuse it (it exits 2 for these), or a missing image folder / bag
        print(f"local-features demo: error: {exc}", file=sys.stderr)
        return 2


def _odometry_demo(args: argparse.Namespace) -> int:
    """``--stereo`` / ``--rgbd``: the visual_odometry node on the folder, via ``images-to-bag``;
    the trajectory (KITTI format) and the logs go to ``--out``."""
    from . import odometry

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(stereo=args.stereo, rgbd=args.rgbd, bag=None, mode=None,
                            method=args.method, set=list(args.set),
                            trajectory=str(out / "trajectory.txt"), intrinsics="", camera="",
                            log_dir=str(out / "run"), domain_id=args.domain_id)
    return odometry.main(ns)


def _main(args: argparse.Namespace) -> int:
    from ...conventions import ConfigError

    if getattr(args, "stereo", None) or getattr(args, "rgbd", None):
        return _odometry_demo(args)
    from ..runner import build_plan, repo_or_share_dir, ros_env
    from ..validate import node_param_specs, weights_to_load

    from ...config import parse_settings

    device = parse_settings(args.set).get("device", "auto")
    method, why = choose_method(args.method, device)
    node_param_specs(method)  # unknown method: the registry's message, before anything else
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cleared = clear_previous_run(out)

    replay = bool(args.images or args.bag)
    rate = args.rate if args.rate is not None else (0.0 if replay else SYNTHETIC_RATE)
    if rate < 0 or (not replay and rate == 0):
        raise ConfigError(f"--rate must be {'>= 0' if replay else '> 0'}, got {rate:g}")
    if args.timeout < 0:
        raise ConfigError(f"--timeout must be >= 0 (0 = no limit), got {args.timeout:g}")
    frames = args.frames
    good: list[Path] = []
    bad: list[Path] = []
    if args.images:
        good, bad = scan_images(Path(args.images))
        if frames is None:
            frames = DEFAULT_FRAMES if args.loop else len(good)
        elif not args.loop:
            frames = min(frames, len(good))
    elif frames is None:
        frames = DEFAULT_FRAMES
    if frames <= 0:
        raise ConfigError("--frames must be positive")

    sets = [f"weights={args.weights}"] if args.weights else []
    sets += ["publish_overlay=true"]
    if not _has(args.set, "qos.output_depth"):
        sets.append("qos.output_depth=100")  # the collector never falls out of the history
    sets += list(args.set)
    width, height = args.width or DEFAULT_SIZE[0], args.height or DEFAULT_SIZE[1]
    source_params = {"frames": frames, "rate": rate, "width": width, "height": height}
    if args.images:
        source_params["image_dir"] = str(Path(args.images).resolve())
        source_params["loop"] = bool(args.loop)
    cfg = repo_or_share_dir() / "config" / f"{method}.yaml"
    # Replay (bag, image folder): process_every_frame + flow control, set by build_plan.
    plan = build_plan(cfg if cfg.is_file() else None, sets, method=method, bag=args.bag,
                      synthetic=not args.bag, source_params=source_params, workdir=out / "run",
                      bag_rate=rate if args.bag else 0.0)

    print(f"method: {method} ({why}); loads "
          f"{weights_to_load(method, str(plan.params.get('weights', '')))}")
    pace = "as fast as the node takes them" if rate == 0 else (
        f"{rate:g}x recorded speed" if args.bag else f"{rate:g} Hz")
    if args.images:
        print(f"source: {len(good)} readable images in {args.images}, {frames} frames, {pace} "
              f"({'looping' if args.loop else 'each once'}, in name order, none dropped)")
        if bad:
            print(f"  {len(bad)} unreadable file(s) skipped: {', '.join(p.name for p in bad)}")
    elif args.bag:
        print(f"source: bag {args.bag} ({plan.image_topic}, {pace}, bag clock, none dropped)")
    else:
        print(f"source: synthetic camera, {frames} frames {width}x{height} at {rate:g} Hz "
              "(a live camera: the node keeps the latest frame)")
    for note in plan.notes:
        print(f"  note: {note}")
    if (args.images or args.bag) and (args.width or args.height):
        print("  note: --width/--height apply to synthetic frames only (ignored here)")
    if cleared:
        print(f"cleared {cleared} file(s) of the previous run from {out}/")
    domain = args.domain_id if args.domain_id is not None else random.randint(100, 199)
    env = ros_env(domain)
    # This process joins the same domain: its DDS must stay on loopback too.
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    print(f"ROS_DOMAIN_ID={domain} (loopback only); logs in {out / 'run'}")
    expected = None if args.bag else frames
    return _run(plan, env, domain, method, out, expected, args.timeout)


def _run(plan, env, domain, method, out: Path, expected, timeout: float) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from ..flow_control import ReplayReport

    from ..diagnostics import make_collector, summarize
    from ..names import NODE_NAME
    from ..runner import node_failure_reason, run_plan

    ns = "/" + plan.namespace.strip("/") if plan.namespace else ""
    base = f"{ns}/{NODE_NAME}"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    executor = SingleThreadedExecutor(context=context)
    last_print = [time.monotonic()]
    t_start = time.monotonic()
    state = {"timed_out": False, "seen": None, "done_at": None}
    node = None
    try:
        # On a bag's clock like the node, so latency = receive time - stamp in recorded time.
        clock = [Parameter("use_sim_time", value=True)] if plan.params.get("use_sim_time") else []
        node = make_collector("demo_collector", f"{base}/features", f"{base}/matches",
                              f"{base}/overlay", out, depth=1000, context=context,
                              parameter_overrides=clock)
        executor.add_node(node)
        print(f"{'t[s]':>5} {'frames':>6} {'rate Hz':>8} {'lat med':>8} {'lat p90':>8} "
              f"{'kpts':>6} {'matches':>8} {'inliers':>8}")

        def poll() -> None:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now - last_print[0] >= 1.0 and state["seen"] is not None:
                last_print[0] = now
                s = summarize(node.sorted_frames())
                print(f"{now - t_start:5.1f} {s.frames:6d} {s.rate_hz:8.2f} "
                      f"{s.latency_median_ms:8.1f} {s.latency_p90_ms:8.1f} "
                      f"{s.keypoints_mean:6.0f} {s.matches_mean:8.1f} {s.inliers_mean:8.1f}")
            if timeout > 0 and now - t_start > timeout:
                state["timed_out"] = True
                raise KeyboardInterrupt

        def sources_when() -> bool:
            """The collector sees the node's publishers (+0.5 s for the matching to settle)."""
            now = time.monotonic()
            if state["seen"] is None and node.sees_publishers():
                state["seen"] = now
            return state["seen"] is not None and now - state["seen"] >= 0.5

        def settled() -> bool:
            """Replay: the source's report (every image acknowledged by the node) and the
            collector holds every processed one. Live: every frame the node received is
            processed, dropped or bad, per a /diagnostics message sent after the source finished,
            and the collector holds every processed one."""
            now = time.monotonic()
            if state["done_at"] is None:
                state["done_at"] = now
            if plan.report_file is not None:
                report = state.get("report") or ReplayReport.read(plan.report_file)
                state["report"] = report
                if report is None:
                    return now - state["done_at"] >= 3.0  # the source failed: nothing to wait for
                return (len(node.sorted_frames()) >= report.processed
                        or now - state["done_at"] >= 5.0)
            d, t = node.last_diagnostics, node.diagnostics_time
            if not d or t is None or t < state["done_at"] + 1.0:
                return False
            n = {k: int(d.get(k, 0)) for k in ("frames_received", "frames_processed",
                                                "frames_dropped", "bad_input_total")}
            if expected is not None and n["frames_received"] < expected \
                    and now - state["done_at"] < 5.0:
                return False  # frames may still be in flight to the node
            handled = n["frames_processed"] + n["frames_dropped"] + n["bad_input_total"]
            if handled < n["frames_received"]:
                return False  # the node is still working on queued frames
            if len(node.sorted_frames()) >= n["frames_processed"]:
                return True
            # The node is done but outputs are missing here: give them 3 s, then report.
            state["balanced_at"] = state.get("balanced_at") or now
            return now - state["balanced_at"] >= 3.0

        result = run_plan(plan, env, duration=0.0, drain_s=max(5.0, timeout) if timeout > 0
                          else 3600.0, log_dir=out / "run", poll=poll,
                          sources_when=sources_when,
                          ready_timeout=min(60.0, timeout) if timeout > 0 else 60.0,
                          settled=settled)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # last messages in flight
            executor.spin_once(timeout_sec=0.05)
        summary = summarize(node.sorted_frames(), node.overlays_saved, node.last_diagnostics)
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)

    node_rc = result.returncodes.get(NODE_NAME)
    log = out / "run" / f"{NODE_NAME}.log"
    if result.reason.startswith(f"{NODE_NAME} exited") and summary.frames == 0:
        reason = node_failure_reason(log) or f"no reason in its log ({log})"
        print(f"{NODE_NAME} failed at startup (exit status {node_rc}): {reason}",
              file=sys.stderr)
        print(f"  full log: {log}", file=sys.stderr)
        return int(node_rc or 1)

    d = summary.node_diagnostics
    processed = int(d["frames_processed"]) if "frames_processed" in d else None
    report = state.get("report") or (ReplayReport.read(plan.report_file)
                                     if plan.report_file is not None else None)
    print(f"\nsummary ({method}, {result.elapsed_s:.1f} s, stop: "
          f"{'--timeout' if state['timed_out'] else result.reason})")
    if report is not None:
        expected, processed = report.published, report.processed
        print(f"  frames collected: {summary.frames}/{report.published} sent   node: processed "
              f"{report.processed}, bad input {report.bad_input}, dropped {report.dropped}, "
              f"unanswered {report.unacknowledged}")
    else:
        print(f"  frames received by collector: {summary.frames}/"
              f"{expected if expected is not None else '?'}   node: received "
              f"{d.get('frames_received', '?')}, processed {d.get('frames_processed', '?')}, "
              f"dropped {d.get('frames_dropped', '?')}, bad input "
              f"{d.get('bad_input_total', '?')}")
    clock = " (bag clock)" if plan.params.get("use_sim_time") else ""
    print(f"  rate {summary.rate_hz:.2f} Hz{clock}   latency median "
          f"{summary.latency_median_ms:.1f} ms, p90 {summary.latency_p90_ms:.1f} ms{clock}   "
          f"(node processing median {d.get('processing_ms_median', '?')} ms)")
    if report is not None and report.elapsed_s > 0:
        print(f"  throughput {report.processed / report.elapsed_s:.2f} frames/s of wall time "
              f"({report.processed} frames in {report.elapsed_s:.1f} s)")
    print(f"  keypoints {summary.keypoints_mean:.0f}   matches {summary.matches_mean:.1f}   "
          f"inliers {summary.inliers_mean:.1f}   (means per frame)")
    print(f"  overlays saved: {summary.overlays_saved} in {out}/")
    (out / "summary.json").write_text(json.dumps({
        "method": method, "frames": summary.frames, "frames_expected": expected,
        "rate_hz": summary.rate_hz,
        "latency_median_ms": summary.latency_median_ms, "latency_p90_ms": summary.latency_p90_ms,
        "keypoints_mean": summary.keypoints_mean, "matches_mean": summary.matches_mean,
        "inliers_mean": summary.inliers_mean, "overlays_saved": summary.overlays_saved,
        "node_diagnostics": d, "returncodes": result.returncodes, "stop": result.reason,
        "timed_out": state["timed_out"],
        "replay": None if report is None else {
            "published": report.published, "processed": report.processed,
            "bad_input": report.bad_input, "dropped": report.dropped,
            "unacknowledged": report.unacknowledged, "stalled": report.stalled}}, indent=2))
    if result.reason.startswith(f"{NODE_NAME} exited"):
        reason = node_failure_reason(log) or f"see {log}"
        print(f"{NODE_NAME} exited during the run (exit status {node_rc}): {reason}",
              file=sys.stderr)
        return int(node_rc or 1)
    if summary.frames and summary.keypoints_mean == 0:
        print(f"warning: {method} found 0 keypoints in every frame: check the weights "
              "(--weights), the detection threshold (--set detection_threshold=...) and the "
              "images", file=sys.stderr)
    if report is not None:
        verdict, ok = _replay_verdict(summary.frames, report, state["timed_out"], timeout)
    else:
        verdict, ok = _verdict(summary.frames, processed, expected, d, state["timed_out"],
                               timeout)
    print(verdict, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _replay_verdict(collected: int, report: "ReplayReport", timed_out: bool,
                    timeout: float) -> tuple[str, bool]:
    """The last line of a replay: every image sent was processed (or reported as bad input)
    and every processed frame reached the collector -- or what was lost where."""
    problems = []
    if report.stalled:
        problems.append(report.reason)
    if timed_out:
        problems.append(f"--timeout {timeout:g} s was reached before the replay had finished")
    if report.published == 0:
        problems.append("the source sent no image")
    elif report.processed == 0:
        problems.append("the node processed no frame")
    if report.dropped:
        problems.append(f"the node dropped {report.dropped} frame(s) (its queue_size is "
                        "smaller than the replay window?)")
    if report.unacknowledged:
        problems.append(f"{report.unacknowledged} frame(s) sent were never answered")
    if collected < report.processed:
        problems.append(f"{report.processed - collected} processed frame(s) did not reach the "
                        "collector")
    bad = (f"; {report.bad_input} bad input frame(s) skipped (see the node's log)"
           if report.bad_input else "")
    if problems:
        return (f"failed: {'; '.join(problems)} (collected {collected}, processed "
                f"{report.processed} of {report.published} sent){bad}", False)
    return (f"ok: all {report.published} frames sent were handled by the node and every one it "
            f"processed ({collected}) was collected{bad}", True)


def _verdict(collected: int, processed: int | None, expected: int | None, d: dict,
             timed_out: bool, timeout: float) -> tuple[str, bool]:
    """The last line: all accounted for, or why the counts differ."""
    if processed is None:
        return ("stopped: no /diagnostics from the node arrived (it never ran a full "
                "diagnostic period?); counts cannot be compared", collected > 0)
    notes = []
    received = int(d.get("frames_received", 0))
    dropped = int(d.get("frames_dropped", 0))
    if expected is not None and received < expected:
        notes.append(f"the node received {received} of {expected} frames published")
    if dropped:
        notes.append(f"the node dropped {dropped} stale frame(s) as a live camera's node does: "
                     "the method is slower than --rate (lower --rate, use smaller frames with "
                     "--width/--height or --set resize.max_edge=..., or a faster --method; "
                     "--images/--bag replay every frame without loss)")
    if collected == processed and collected > 0:
        return ("ok: the collector received every frame the node processed "
                f"({collected})" + (f"; note: {'; '.join(notes)}" if notes else ""), True)
    if timed_out:
        why = f"--timeout {timeout:g} s was reached before the node had finished"
    elif collected < processed:
        why = "the last outputs did not reach the collector before the node stopped"
    elif processed == 0:
        why = "the node processed no frame"
    else:
        why = "the collector saw outputs the node's last diagnostics do not count yet"
    return (f"stopped with the collector at {collected} of the node's {processed} processed "
            f"frames: {why}" + (f"; {'; '.join(notes)}" if notes else ""), False)
