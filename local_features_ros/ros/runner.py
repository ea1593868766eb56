"""Start the same nodes as ``launch/extractor.launch.py`` without ``ros2 launch``.

Why: a machine with rclpy from pip (many CI boxes, a developer laptop) has no ROS 2 install, so
no ``ros2 launch``. ``local-features run`` reads the same parameter YAML, applies ``--set`` overrides,
writes one resolved params file and starts each node as its own process with
``--ros-args --params-file ... -r <remaps>`` -- exactly what launch_ros does -- plus an image source
(the bag player or the synthetic camera). No rclpy import here: nodes run in subprocesses (the
launch file imports this module too). ``local-features run --print-config`` is
``ros/param_files.py``.

``LAUNCH_ARGS`` is the one table of launch arguments: the launch file imports it for its
``DeclareLaunchArgument`` defaults, and ``ros/commands/run.py`` maps each to a command-line option.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .names import NODE_NAME, PACKAGE

logger = logging.getLogger(__name__)

#: Key the shipped YAMLs use: matches the node in any namespace (a bare ``feature_extractor:``
#: key only matches the node in the root namespace).
PARAMS_NODE_KEY = f"/**/{NODE_NAME}"
DEFAULT_PARAMS_FILE = "config/extractor.yaml"  # relative to the package share / repo root


@dataclass(frozen=True)
class LaunchArg:
    """One ``extractor.launch.py`` argument and its ``local-features run`` equivalent."""

    name: str
    default: str
    description: str
    runner_option: str | None  # None = launch-only


LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg("method", "", "feature method; empty = the one in params_file", "--method"),
    LaunchArg("params_file", DEFAULT_PARAMS_FILE, "parameter YAML (relative paths are "
              "resolved in share/local_features_ros)", "config"),
    LaunchArg("namespace", "", "namespace of the node (one extractor per camera)",
              "--namespace"),
    LaunchArg("image", "image", "input image topic (image/compressed follows it)", "--image"),
    LaunchArg("camera_info", "camera_info", "CameraInfo topic", "--camera-info"),
    LaunchArg("use_sim_time", "false", "follow /clock (bag replay)", "--use-sim-time"),
    LaunchArg("rviz", "false", "also start rviz2 with rviz/extractor.rviz (its topics follow "
              "namespace and image)", None),
)


def launch_defaults() -> dict[str, str]:
    return {a.name: a.default for a in LAUNCH_ARGS}


def topic_remaps(image: str, camera_info: str) -> list[tuple[str, str]]:
    """Node-relative names -> user topics; ``image/compressed`` follows ``image``."""
    remaps = []
    if image and image != "image":
        remaps += [("image", image), ("image/compressed", image.rstrip("/") + "/compressed")]
    if camera_info and camera_info != "camera_info":
        remaps.append(("camera_info", camera_info))
    return remaps


#: Topics of the shipped ``rviz/extractor.rviz`` (root namespace, default names).
RVIZ_OVERLAY_TOPIC = f"/{NODE_NAME}/overlay"
RVIZ_IMAGE_TOPIC = "/image"


def absolute_topic(namespace: str, topic: str) -> str:
    """``image`` in namespace ``cam0`` -> ``/cam0/image``; absolute names stay as they are."""
    if topic.startswith("/"):
        return topic
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def rviz_config(template: str, namespace: str = "", image: str = "image") -> str:
    """``rviz/extractor.rviz`` with the overlay and input topics of this node's namespace and
    image remapping (the launch file's ``rviz:=true`` writes it to a temporary file)."""
    overlay = absolute_topic(namespace, f"{NODE_NAME}/overlay")
    out = []
    for line in template.splitlines():
        key, sep, value = line.partition("Value: ")
        if sep and value.strip() == RVIZ_OVERLAY_TOPIC:
            line = f"{key}Value: {overlay}"
        elif sep and value.strip() == RVIZ_IMAGE_TOPIC:
            line = f"{key}Value: {absolute_topic(namespace, image or 'image')}"
        out.append(line)
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------- params
def repo_or_share_dir() -> Path:
    """Directory holding ``config/``, ``launch/``, ``rviz/``: the source checkout when run from
    it, else ``share/local_features_ros`` of a colcon/ament install."""
    here = Path(__file__).resolve().parents[2]
    if (here / DEFAULT_PARAMS_FILE).is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # no ament index: fall back to the checkout layout
        return here


def params_file_for(method: str, params_file: str | os.PathLike | None) -> str:
    """``method`` given with the *default* params file -> that method's own YAML.

    Why: thresholds are in method units (SuperPoint's 0.015 is meaningless for D2-Net) and
    method-specific ``extractor.*`` keys differ, so ``method:=d2net`` must not inherit the
    defaults of ``config/extractor.yaml`` (the default method's). An explicit params file is kept as is.
    """
    if method and str(params_file or DEFAULT_PARAMS_FILE) == DEFAULT_PARAMS_FILE:
        return f"config/{method}.yaml"
    return str(params_file or DEFAULT_PARAMS_FILE)


def resolve_params_file(path: str | os.PathLike | None) -> Path:
    p = Path(path or DEFAULT_PARAMS_FILE)
    if not p.is_file() and not p.is_absolute():
        p = repo_or_share_dir() / p
    if not p.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    return p


def load_node_params(path: str | os.PathLike, node: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` block of ``node`` (any key form: ``/**/...``, ``node``,
    ``/ns/node`` or ``/**``) as a nested dict."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    merged: dict[str, Any] = {}
    for key, block in data.items():
        name = str(key).rstrip("/").split("/")[-1]
        if name in (node, "**") and isinstance(block, Mapping):
            params = block.get("ros__parameters")
            if isinstance(params, Mapping):
                _deep_update(merged, params)
    if not merged:
        raise ValueError(f"{path}: no '{node}: ros__parameters:' block")
    return merged


def _deep_update(dst: dict, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = dict(v) if isinstance(v, Mapping) else v


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML -> dotted ROS names (``resize: {max_edge: 640}`` -> ``resize.max_edge``)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["max_keypoints=500", "matcher.ratio=0.9"]`` -> typed values (YAML scalars, empty =
    ""), read by the one ``--set`` parser (``config.split_setting`` / ``config.parse_value``);
    ``resize_max_edge`` is accepted for the node's ``resize.max_edge`` as in every other
    command."""
    from ..config import parse_value, split_setting
    from ..settings import RENAMED_KEYS

    out: dict[str, Any] = {}
    for item in items:
        key, value = split_setting(item)
        key = RENAMED_KEYS.get(key, key)  # the extractor's spelling -> the node's
        out[key] = parse_value(value) if value else ""
    return out


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flat dotted overrides on top of nested params; a float key keeps float type (ROS refuses
    an int for a double parameter)."""
    flat = flatten(params)
    for k, v in overrides.items():
        if isinstance(flat.get(k), float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        flat[k] = v
    return flat


def write_params_file(flat: Mapping[str, Any], path: str | os.PathLike,
                      node: str = NODE_NAME) -> Path:
    """One node's resolved parameters as a ROS params file (its key matches any namespace)."""
    p = Path(path)
    p.write_text(yaml.safe_dump({f"/**/{node}": {"ros__parameters": dict(flat)}},
                                sort_keys=True))
    return p


# ----------------------------------------------------------------------------------- processes
def ros_env(domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for node subprocesses: DDS on loopback only, one domain. CPU threads are
    left to the nodes (``hardware.extraction_threads``) unless the caller set OMP_NUM_THREADS."""
    env = dict(os.environ if base is None else base)
    env["ROS_LOCALHOST_ONLY"] = "1"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    role: str  # "node" | "source"


@dataclass
class RunPlan:
    processes: list[ProcessSpec]
    params_file: Path
    params: dict[str, Any]
    image_topic: str
    camera_info_topic: str
    namespace: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    report_file: Path | None = None  # the replaying source's ReplayReport (JSON)
    notes: list[str] = field(default_factory=list)  # what the plan chose that users should see


def ros_args(params_file: Path | None, namespace: str, remaps: Sequence[tuple[str, str]],
             params: Mapping[str, Any] | None = None) -> list[str]:
    args = ["--ros-args"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    if namespace:
        args += ["-r", f"__ns:={'/' + namespace.strip('/')}"]
    for src, dst in remaps:
        args += ["-r", f"{src}:={dst}"]
    for k, v in (params or {}).items():
        args += ["-p", f"{k}:={_param_text(v)}"]
    return args


def _param_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v else "''"
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def module_argv(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def plan_method(method: str, config: str | os.PathLike | None = None,
                device: Any = None) -> tuple[str, Path, str]:
    """(method, parameter file, why) of a run: an explicit ``method`` wins, else the file's.

    ``auto`` (the default file's method) becomes the hardware's choice (``hardware.py``); with
    the default parameter file, that method's own ``config/<method>.yaml`` is used, so its
    thresholds (in method units) and specific keys apply. ``why`` is the one line to print, empty
    when nothing was chosen automatically. ConfigError for an unknown method.
    """
    from ..conventions import DEFAULT_METHOD
    from ..hardware import AUTO_METHOD, choose_method
    from .validate import node_param_specs

    if method and method != AUTO_METHOD:
        node_param_specs(method)  # 'unknown method ...' before looking for config/<method>.yaml
        return method, resolve_params_file(params_file_for(method, config)), ""
    path = resolve_params_file(params_file_for("", config))
    flat = flatten(load_node_params(path))
    found = str(flat.get("method", DEFAULT_METHOD))
    if not method and found != AUTO_METHOD:
        node_param_specs(found)
        return found, path, ""
    choice = choose_method(str(device if device is not None else flat.get("device", "auto")))
    if str(config or DEFAULT_PARAMS_FILE) == DEFAULT_PARAMS_FILE:
        path = resolve_params_file(params_file_for(choice.method, None))
    return choice.method, path, f"method auto -> {choice.method}: {choice.reason}"


def build_plan(config: str | os.PathLike | None = None, sets: Sequence[str] = (),
               namespace: str = "", image: str = "", camera_info: str = "", method: str = "",
               use_sim_time: bool = False, bag: str | None = None, synthetic: bool = False,
               source_params: Mapping[str, Any] | None = None, bag_rate: float = 0.0,
               workdir: str | os.PathLike | None = None, start_delay: float = 1.0,
               check_weights: bool = True, wall_clock: bool = False,
               window: int | None = None, ack_timeout: float | None = None) -> RunPlan:
    """Resolve the YAML + overrides and the commands of the node and its source.

    Raises ``ConfigError`` (``ros/validate.py``) when the node would refuse the parameters, and
    for a bag that is missing or lacks the requested topics. ``start_delay``: seconds the source
    waits after it sees the node's subscription. Discovery is asymmetric: the node's reader may
    match the source's writer a little later, and frames sent before that are lost (more so on
    a loaded machine).

    Replay (a bag, or ``source_params["image_dir"]``) is lossless: the node queues every frame
    (``process_every_frame``) and the source keeps at most ``window`` images unacknowledged on
    ``~/frame_done``; ``bag_rate`` 0 plays as fast as the node takes it. A bag runs on its own
    clock (``use_sim_time`` + ``/clock``) unless ``wall_clock``.
    """
    from ..conventions import ConfigError
    from .bag_input import plan_bag_input
    from .flow_control import DEFAULT_ACK_TIMEOUT_S, DEFAULT_WINDOW, done_topic
    from .validate import validate_node_params

    window = DEFAULT_WINDOW if window is None else int(window)
    ack_timeout = DEFAULT_ACK_TIMEOUT_S if ack_timeout is None else float(ack_timeout)
    if window < 1:
        raise ConfigError(f"the replay window must be >= 1, got {window}")
    if ack_timeout <= 0:
        raise ConfigError(f"the acknowledgement timeout must be > 0 s, got {ack_timeout:g}")
    if bag_rate < 0:
        raise ConfigError(f"--rate must be >= 0 (0 = as fast as the node takes it), got "
                          f"{bag_rate:g}")
    overrides = parse_set(sets)
    method, params_path, why = plan_method(method or str(overrides.get("method", "")), config,
                                           overrides.get("device"))
    overrides["method"] = method
    notes: list[str] = [why] if why else []
    if use_sim_time or (bag and not wall_clock):
        overrides["use_sim_time"] = True
    replay = bool(bag) or bool((source_params or {}).get("image_dir"))
    if replay:
        # Every frame, in order; deep enough that neither side's DDS history can overflow.
        for key, value in (("process_every_frame", True), ("qos.depth", 10),
                           ("qos.output_depth", 100)):
            overrides.setdefault(key, value)
    base = load_node_params(params_path)
    if bag:
        transport = str(overrides.get("input_transport",
                                      flatten(base).get("input_transport", "raw")))
        found = plan_bag_input(bag, image, camera_info, transport,
                               "input_transport" in overrides)
        image, camera_info = found.image, found.camera_info
        overrides["input_transport"] = found.transport
        notes += [found.note] if found.note else []
    flat = apply_overrides(base, overrides)
    # The node's own checks (method, names, types, ranges, the method's config, weights file)
    # before any process starts: a typo fails here with the reason, not in a log file.
    flat = validate_node_params(flat, check_weights=check_weights)
    from .params import node_defaults

    node = {**node_defaults(), **flat}  # the node's own values: the table's defaults under them
    if replay and int(node["queue_size"]) < window:
        raise ConfigError(f"queue_size {node['queue_size']} is smaller than the replay "
                          f"window ({window} images in flight)")
    transport = str(node["input_transport"])
    image = image or "image"
    camera_info = camera_info or "camera_info"
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lfr_run_"))
    wd.mkdir(parents=True, exist_ok=True)
    report_file = wd / "replay_report.json" if replay else None
    if report_file is not None and report_file.exists():
        report_file.unlink()
    params_file = write_params_file(flat, wd / "feature_extractor.params.yaml")
    remaps = topic_remaps(image, camera_info)
    node_params: dict[str, Any] = {}
    if (bag or synthetic) and not any(k.startswith("qos_overrides.") for k in flat):
        # Replay (and our own demo sources) are lossless only with a reliable reader: best-effort
        # samples of ~1 MB (640x480 rgb8) lose UDP fragments on loopback-only DDS and never
        # arrive at all. A live camera keeps the best-effort default.
        topic = absolute_topic(namespace, image).rstrip("/")
        topic += "/compressed" if transport == "compressed" else ""
        node_params[f"qos_overrides.{topic}.subscription.reliability"] = "reliable"
    procs = [ProcessSpec(NODE_NAME, module_argv(f"{PACKAGE}.ros.extractor_node")
                         + ros_args(params_file, namespace, remaps, node_params), "node")]
    if bag:
        # Play only what the node subscribes to, once it subscribes (+ start_delay).
        played = [image.rstrip("/") + "/compressed" if transport == "compressed" else image]
        played += [camera_info] if camera_info.startswith("/") else []
        argv = module_argv(f"{PACKAGE}.ros.bag_player") + [
            str(bag), "--rate", str(bag_rate), "--topics", *played, "--wait-subscribers", "1",
            "--wait-timeout", "60", "--start-delay", str(float(start_delay)),
            "--done-topic", done_topic(namespace), "--window", str(window),
            "--ack-timeout", str(ack_timeout), "--report", str(report_file)]
        if flat.get("use_sim_time"):
            argv.append("--clock")
        procs.append(ProcessSpec("bag_player", argv, "source"))
    elif synthetic:
        sp = {"transport": "compressed" if transport == "compressed" else "raw",
              "wait_for_subscribers": True, "start_delay": float(start_delay),
              **(source_params or {})}
        if report_file is not None:
            sp.update(done_topic=done_topic(namespace), window=window,
                      ack_timeout=float(ack_timeout), report_file=str(report_file))
        procs.append(ProcessSpec("synthetic_camera",
                                 module_argv(f"{PACKAGE}.ros.synthetic_camera")
                                 + ros_args(None, namespace, remaps, sp), "source"))
    return RunPlan(procs, params_file, flat, image, camera_info, namespace,
                   report_file=report_file, notes=notes)


@dataclass
class RunResult:
    returncodes: dict[str, int | None]
    elapsed_s: float
    reason: str


def start_processes(plan: RunPlan, env: Mapping[str, str], log_dir: Path | None = None,
                    roles: Sequence[str] = ("node", "source"),
                    procs: dict[str, subprocess.Popen] | None = None,
                    ) -> dict[str, subprocess.Popen]:
    """Start the processes of ``roles`` (nodes before sources: sources wait for a subscriber, so
    nothing is lost); added to ``procs`` when given."""
    procs = {} if procs is None else procs
    for spec in sorted(plan.processes, key=lambda s: s.role != "node"):
        if spec.role not in roles:
            continue
        out = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            out = open(log_dir / f"{spec.name}.log", "wb")
        logger.info("starting %s: %s", spec.name, " ".join(spec.argv))
        procs[spec.name] = subprocess.Popen(spec.argv, env=dict(env), stdout=out,
                                            stderr=subprocess.STDOUT if out else None)
    return procs


def node_failure_reason(log: Path) -> str | None:
    """The node's own one-line reason from its log: its ``configuration error: ...`` line (exit
    status 2), else the last error/exception line; None when the log has neither."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if "configuration error:" in line:
            return line[line.index("configuration error:"):].strip()
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("[ERROR]") or (text and "Error" in text.split(":")[0]):
            return text
    return None


def stop_processes(procs: Mapping[str, subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT (rclpy shuts down cleanly and joins the worker), then SIGKILL after ``timeout``."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_plan(plan: RunPlan, env: Mapping[str, str], duration: float = 0.0,
             drain_s: float = 3.0, log_dir: Path | None = None,
             poll: Any = None, sources_when: Any = None, ready_timeout: float = 60.0,
             settled: Any = None) -> RunResult:
    """Run until ``duration`` (0 = until interrupted), the source has finished (+ ``drain_s``
    for the node to process what it received), or a node exits by itself.

    ``sources_when()``: sources start only once it is true (or after ``ready_timeout``), e.g. when
    the caller's own subscribers see the node's publishers (DDS matching is asynchronous: a
    sample published before a reliable reader matched is never delivered to it).
    ``settled()``: after the source finished, stop as soon as it is true; ``drain_s`` is then
    the longest wait."""
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.monotonic()
    reason = "duration"
    source_done: float | None = None
    nodes = [s.name for s in plan.processes if s.role == "node"]
    sources = [s.name for s in plan.processes if s.role == "source"]

    def step() -> str | None:
        if poll is not None:
            poll()
        else:
            time.sleep(0.1)
        dead = [n for n in nodes if procs[n].poll() is not None]
        if dead:
            return f"{dead[0]} exited with status {procs[dead[0]].returncode}"
        return None

    try:
        start_processes(plan, env, log_dir, roles=("node",), procs=procs)
        if sources_when is not None:
            while time.monotonic() - t0 < ready_timeout and not sources_when():
                if (why := step()) is not None:
                    return _finish(procs, t0, why)
        start_processes(plan, env, log_dir, roles=("source",), procs=procs)
        while True:
            why = step()
            if why is not None:
                reason = why
                break
            now = time.monotonic()
            if sources and source_done is None and all(procs[s].poll() is not None
                                                       for s in sources):
                source_done = now
            if source_done is not None and (now - source_done >= drain_s
                                            or (settled is not None and settled())):
                reason = "source finished"
                break
            if duration > 0 and now - t0 >= duration:
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    except BaseException:
        stop_processes(procs)  # never leave a node running behind an error
        raise
    return _finish(procs, t0, reason)


def _finish(procs: dict[str, subprocess.Popen], t0: float, reason: str) -> RunResult:
    stop_processes(procs)
    return RunResult({k: p.returncode for k, p in procs.items()}, time.monotonic() - t0, reason)
