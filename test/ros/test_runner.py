"""``local-features run``: parameter YAMLs, overrides, process commands, and a bag replay run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from local_features_ros.ros import param_files, runner

REPO = Path(__file__).resolve().parents[2]
#: feature_extractor parameter files (config/odometry.yaml belongs to visual_odometry).
CONFIGS = sorted(p for p in (REPO / "config").glob("*.yaml") if p.stem != "odometry")


def _declared_parameters(method: str) -> dict[str, object]:
    """Name -> default of every parameter the node declares for ``method``."""
    from local_features_ros.matching import MatcherConfig
    from local_features_ros.registry import get_extractor_class
    from local_features_ros.ros import params as P

    cls = get_extractor_class(method)
    specs = (P.node_specs() + P.place_recognition_specs()
             + P.shared_extractor_specs(cls.node_default_conf(), cls.runtime_keys)
             + P.method_specs({k: cls.node_default_conf()[k] for k in cls.default_conf},
                              cls.runtime_keys)
             + P.matcher_specs(MatcherConfig()) + P.matcher_type_specs()
             + P.lightglue_specs(P.method_lightglue_conf(cls))
             + P.verify_specs(P.method_verify_conf(cls)))
    return {s.name: s.default for s in specs}


def test_node_only_rows_are_the_node_config():
    """The node's own rows are generated from ``NodeConfig``: its keys (under their parameter
    names), defaults and runtime keys; the ``method`` row lists the registry's methods."""
    from local_features_ros.ros import params as P

    specs = P.node_specs()
    name = {k: P.NODE_NAMES.get(k, k) for k in P.NodeConfig.key_names()}
    assert [s.name for s in specs] == list(name.values())
    assert {s.name: s.default for s in specs} == {name[k]: v for k, v in
                                                 P.NodeConfig.defaults().items()}
    assert {s.name for s in specs if s.runtime} == {name[k] for k in P.NodeConfig.runtime_keys}
    assert all(s.target == "node:" + s.name for s in specs)
    assert P.node_defaults()["qos.depth"] == P.NodeConfig().qos_depth
    assert "orb" in next(s for s in specs if s.name == "method").description


def test_every_method_has_a_config():
    """One ``config/<method>.yaml`` per node method of the registry (plus the ``auto`` default
    file ``extractor.yaml``), and no file for a method the registry does not have."""
    from local_features_ros.registry import available_methods

    names = {p.stem for p in CONFIGS}
    assert names == {"extractor", *available_methods(include_evaluation_only=False)}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_the_generated_file(path):
    """Each config file is exactly what ``local-features run --print-config`` writes, so its
    comments (method lists, LightGlue weights, verification models) follow the code."""
    from local_features_ros.hardware import AUTO_METHOD

    method = AUTO_METHOD if path.stem == "extractor" else path.stem
    expected = param_files.default_params_yaml(method, default_file=path.stem == "extractor")
    assert path.read_text() == expected, (
        f"{path.relative_to(REPO)} is out of date: regenerate it with "
        f"`local-features run --print-config {method} > config/{path.name}`")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_lists_every_parameter_with_method_defaults(path):
    flat = runner.flatten(runner.load_node_params(path))
    if path.stem == "extractor":
        _check_auto_params(flat, path.read_text())
    else:
        assert flat["method"] == path.stem
        _check_params(flat, path.read_text())


def _check_auto_params(flat: dict, text: str) -> None:
    """``config/extractor.yaml`` is ``method: auto``: it holds every parameter except the
    extractor keys, whose defaults are the chosen method's (in its own units)."""
    from local_features_ros.conventions import DEFAULT_METHOD
    from local_features_ros.hardware import AUTO_METHOD

    assert flat["method"] == DEFAULT_METHOD == AUTO_METHOD
    assert text == param_files.default_params_yaml(AUTO_METHOD, default_file=True)
    for method in ("orb", "superpoint"):
        declared = _declared_parameters(method)
        extractor = set(runner.flatten(runner.load_node_params(REPO / "config" /
                                                               f"{method}.yaml"))) - set(flat)
        assert set(flat) <= set(declared), set(flat) - set(declared)
        assert all(name in declared for name in extractor)
        assert "detection_threshold" in extractor and "max_keypoints" in extractor
    # no value in it overrides a method's own node default (XFeat's 2 px RANSAC threshold,
    # LighterGlue's settings): those keys are left to config/<method>.yaml
    from local_features_ros.registry import available_methods
    from local_features_ros.ros.validate import node_param_specs

    for method in available_methods(include_evaluation_only=False):
        specs = node_param_specs(method)
        differ = {k: (v, specs[k].default) for k, v in flat.items() if v != specs[k].default}
        assert not differ, (method, differ)
    assert "verify.ransac_threshold" not in flat
    assert "matcher.lightglue.filter_threshold" not in flat


def test_print_config_works_for_every_method(tmp_path):
    from local_features_ros.registry import available_methods

    for method in available_methods(include_evaluation_only=False):
        text = param_files.default_params_yaml(method)
        path = tmp_path / f"{method}.yaml"
        path.write_text(text)
        flat = runner.flatten(runner.load_node_params(path))
        assert flat["method"] == method
        _check_params(flat, text)
    with pytest.raises(ValueError, match="evaluation-only"):
        param_files.default_params_yaml("akaze")  # a peer is not a node method


def _check_params(flat: dict, text: str) -> None:
    from local_features_ros.registry import get_extractor_class

    method = flat["method"]
    declared = _declared_parameters(method)
    assert set(flat) == set(declared), set(flat) ^ set(declared)
    # ROS refuses a YAML int for a double parameter (and vice versa): types must match.
    for name, value in flat.items():
        assert type(value) is type(declared[name]) or (
            isinstance(value, list) and isinstance(declared[name], list)), name
    # The extractor values are the method's own defaults.
    conf = get_extractor_class(method).node_default_conf()
    for key, value in conf.items():
        name = {"resize_max_edge": "resize.max_edge"}.get(key, key)
        if name not in flat:
            name = f"extractor.{key}"
        assert flat[name] == (list(value) if isinstance(value, tuple) else value), name
    # The YAML root key matches the node in any namespace.
    assert list(yaml.safe_load(text)) == [runner.PARAMS_NODE_KEY]


def test_parse_set_and_overrides():
    sets = runner.parse_set(["max_keypoints=500", "matcher.ratio=0.8", "publish_overlay=false",
                             "weights=/tmp/w.pth", "detection_threshold=1"])
    assert sets == {"max_keypoints": 500, "matcher.ratio": 0.8, "publish_overlay": False,
                    "weights": "/tmp/w.pth", "detection_threshold": 1}
    flat = runner.apply_overrides({"detection_threshold": 0.015, "matcher": {"ratio": 1.0},
                                   "max_keypoints": -1}, sets)
    assert flat["detection_threshold"] == 1.0 and isinstance(flat["detection_threshold"], float)
    assert flat["matcher.ratio"] == 0.8 and flat["max_keypoints"] == 500
    with pytest.raises(ValueError):
        runner.parse_set(["no_equals_sign"])


def test_build_plan_commands_and_params_file(tmp_path):
    plan = runner.build_plan(REPO / "config" / "orb.yaml", ["max_keypoints=300"],
                             namespace="cam0", image="/cam0/image_raw",
                             camera_info="/cam0/camera_info", synthetic=True,
                             source_params={"frames": 5}, workdir=tmp_path)
    node, source = plan.processes
    assert node.role == "node" and source.role == "source"
    argv = node.argv
    assert argv[1:3] == ["-m", "local_features_ros.ros.extractor_node"]
    ros = argv[argv.index("--ros-args"):]
    assert ros[ros.index("--params-file") + 1] == str(plan.params_file)
    pairs = {ros[i + 1] for i, a in enumerate(ros) if a == "-r"}
    assert pairs == {"__ns:=/cam0", "image:=/cam0/image_raw",
                     "image/compressed:=/cam0/image_raw/compressed",
                     "camera_info:=/cam0/camera_info"}
    written = yaml.safe_load(plan.params_file.read_text())
    params = written[runner.PARAMS_NODE_KEY]["ros__parameters"]
    assert params["max_keypoints"] == 300 and params["method"] == "orb"
    assert params["resize.max_edge"] == 0
    src = source.argv
    assert "local_features_ros.ros.synthetic_camera" in src
    assert "frames:=5" in src and "wait_for_subscribers:=true" in src
    assert "start_delay:=1.0" in src
    assert {src[i + 1] for i, a in enumerate(src) if a == "-r"} == pairs


def test_written_params_file_applies_in_a_namespace(tmp_path, ros_env):
    """rclpy itself reads the resolved file for a node in a namespace (the '/**/' key)."""
    rclpy = pytest.importorskip("rclpy")
    plan = runner.build_plan(REPO / "config" / "sift.yaml", ["extractor.root_sift=true"],
                             namespace="cam1", workdir=tmp_path)
    ctx = rclpy.Context()
    rclpy.init(args=["x", "--ros-args", "--params-file", str(plan.params_file),
                     "-r", "__ns:=/cam1"], context=ctx,
               domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        node = rclpy.create_node("feature_extractor", context=ctx,
                                 automatically_declare_parameters_from_overrides=True)
        assert node.get_fully_qualified_name() == "/cam1/feature_extractor"
        assert node.get_parameter("method").value == "sift"
        assert node.get_parameter("extractor.root_sift").value is True
        assert node.get_parameter("matcher.ratio").value == pytest.approx(1.0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_run_refuses_bad_parameters_before_starting(ros_env):
    """The node's own rules, checked before any process starts (exit 2, the node's status for a
    configuration error): unknown method (not 'config/foo.yaml not found'), unknown key."""
    for extra, needle in (
            (["--method", "no_such_method"], "unknown method 'no_such_method' (available: "),
            (["--method", "SuperPoint"], "unknown method 'SuperPoint' (available: "),
            (["--set", "foo=1"], "unknown parameter 'foo' for method 'orb' (known: ")):
        proc = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "run",
                               str(REPO / "config" / "orb.yaml"), *extra, "--duration", "60"],
                              env=ros_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert needle in proc.stderr, proc.stderr
        assert "starting feature_extractor" not in proc.stderr  # nothing was started


def test_run_prints_the_nodes_startup_failure(ros_env, tmp_path):
    """A failure only the node can see (LightGlue without weights for orb): its one-line reason
    and its exit status come back to the terminal."""
    proc = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "run",
                           str(REPO / "config" / "orb.yaml"), "--set", "matcher.type=lightglue",
                           "--duration", "60", "--log-dir", str(tmp_path)],
                          env=ros_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "feature_extractor exited with status 2" in proc.stdout
    assert ("feature_extractor failed (exit status 2): configuration error: cannot build "
            "method 'orb'") in proc.stderr and "matcher.lightglue.weights" in proc.stderr


def test_validate_node_params_applies_the_nodes_rules(tmp_path):
    from local_features_ros.conventions import ConfigError
    from local_features_ros.ros.validate import validate_node_params

    flat = runner.flatten(runner.load_node_params(REPO / "config" / "orb.yaml"))
    out = validate_node_params({**flat, "detection_threshold": 1, "use_sim_time": True,
                                "qos_overrides./image.subscription.reliability": "reliable"})
    assert out["detection_threshold"] == 1.0 and isinstance(out["detection_threshold"], float)
    for change, needle in (({"method": "foo"}, "unknown method 'foo' (available: "),
                           ({"foo": 1}, "unknown parameter 'foo' for method 'orb' (known: "),
                           ({"max_keypoints": "abc"}, "'max_keypoints' must be an integer"),
                           ({"max_keypoints": 0}, "max_keypoints must be -1"),
                           ({"matcher.ratio": 2.0}, "'matcher.ratio' must be in [0.0, 1.0]"),
                           ({"verify.model": "similarity"}, "'verify.model' must be one of"),
                           ({"publish_overlay": "yes"}, "must be a boolean"),
                           ({"extractor.n_levels": 0}, "n_levels")):
        with pytest.raises(ConfigError) as err:
            validate_node_params({**flat, **change})
        assert needle in str(err.value), (change, str(err.value))
    sp = runner.flatten(runner.load_node_params(REPO / "config" / "superpoint.yaml"))
    with pytest.raises(ConfigError, match="weights file not found: /nonexistent.pth"):
        validate_node_params({**sp, "weights": "/nonexistent.pth"})
    validate_node_params({**sp, "weights": "random"})
    d2 = runner.flatten(runner.load_node_params(REPO / "config" / "d2net.yaml"))
    with pytest.raises(ConfigError, match="'d2net' ships no weights"):
        validate_node_params(d2)


def test_rviz_config_follows_namespace_and_image():
    template = (REPO / "rviz" / "extractor.rviz").read_text()
    assert runner.rviz_config(template) == template
    cfg = yaml.safe_load(runner.rviz_config(template, "/cam1/", "image_raw"))
    topics = [d["Topic"]["Value"] for d in cfg["Visualization Manager"]["Displays"]]
    assert topics == ["/cam1/feature_extractor/overlay", "/cam1/image_raw"]


@pytest.mark.ros
def test_run_replays_a_bag_through_the_node(tmp_path, ros_env):
    """`local-features run --bag`: every bag frame comes out of the node with its own stamp."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from local_features_ros.bags import write_synthetic_bag
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    frames = list(SyntheticScene(1, PinholeCamera.default(160, 120)).frames(8, "orbit"))
    stamps = [1700000000.0 + 0.1 * i for i in range(len(frames))]
    bag = write_synthetic_bag(tmp_path / "bag", [(s, f.image) for s, f in zip(stamps, frames)],
                              K=frames[0].K)
    domain = int(ros_env["ROS_DOMAIN_ID"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bag_check", context=ctx)
    got: dict[int, int] = {}
    node.create_subscription(
        PointCloud2, "/feature_extractor/features",
        lambda m: got.__setitem__(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.width),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_features_ros.cli", "run", str(REPO / "config" / "orb.yaml"),
         "--bag", str(bag), "--set", "process_every_frame=true", "--set", "qos.depth=50",
         "--duration", "90", "--log-dir", str(tmp_path / "logs"), "--start-delay", "3"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        for _ in range(20):
            ex.spin_once(timeout_sec=0.05)
        out = proc.stdout.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert proc.returncode == 0, out
    assert "source finished" in out
    assert "-r image:=/camera/image_raw" in out and "camera_info:=/camera/camera_info" in out
    assert "qos_overrides./camera/image_raw.subscription.reliability:=reliable" in out
    node_log = (tmp_path / "logs" / "feature_extractor.log").read_text(errors="replace")
    assert f"processed {len(frames)}, dropped 0, bad input 0" in node_log, node_log
    # Every output carries a bag frame's own header stamp. (Our subscriber may match the node's
    # publisher after the first frames went out -- discovery is asymmetric -- so completeness is
    # checked on the node's totals above, not on what this process happened to receive.)
    want = {int(round(s * 1e9)) for s in stamps}
    assert got and set(got) <= want, (sorted(got), out, node_log)
    assert max(got) == max(want)
    assert all(n > 0 for n in got.values())
    assert np.isfinite(list(got.values())).all()


def test_own_sources_get_a_reliable_input_and_live_cameras_do_not(tmp_path):
    """Synthetic/bag sources are ours: lossless reliable input (1 MB best-effort frames are lost
    on loopback DDS). A live camera keeps the best-effort default."""
    key = "qos_overrides.{}.subscription.reliability"
    plan = runner.build_plan(None, [], namespace="cam0", synthetic=True, workdir=tmp_path / "a")
    assert any(key.format("/cam0/image") + ":=reliable" in a for a in plan.processes[0].argv)
    plan = runner.build_plan(None, [], image="/camera/image_raw", workdir=tmp_path / "b")
    assert not any("qos_overrides" in a for a in plan.processes[0].argv)


def test_top_level_help_lists_every_command_with_its_help(capsys):
    """`local-features --help`: each subcommand with its one-line HELP (read, not imported)."""
    import importlib

    from local_features_ros import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("extract", "run", "demo", "methods"):
        module = importlib.import_module(cli.COMMANDS[name])
        assert f"{name} {module.HELP}" in text, (name, text)
    assert "(see: local-features" not in text
