"""Launch file, rviz config and ament_python packaging, checked without a ROS 2 install.

launch/launch_ros are not installable here, so the launch file runs against tiny stand-in modules
(put in ``sys.modules``) that record the actions it constructs; the argument table must equal the
one docs/node.md#launch-and-runner lists and the defaults must equal ``local-features run``'s.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "extractor.launch.py"
#: docs/node.md#launch-and-runner: the launch arguments, by name.
EXPECTED_ARGS = {"method", "params_file", "namespace", "image", "camera_info", "use_sim_time",
                 "rviz"}


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _fake_launch_modules(share: Path) -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorded,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    actions.LogInfo = type("LogInfo", (_Recorded,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = _LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorded,), {})
    ament = types.ModuleType("ament_index_python")
    ament_pkgs = types.ModuleType("ament_index_python.packages")
    ament_pkgs.get_package_share_directory = (
        lambda pkg: str(share) if pkg == "local_features_ros" else (_ for _ in ()).throw(
            LookupError(pkg)))
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
            "launch_ros": launch_ros,
            "launch_ros.actions": ros_actions, "ament_index_python": ament,
            "ament_index_python.packages": ament_pkgs}


@pytest.fixture
def launch_module(monkeypatch, tmp_path):
    share = tmp_path / "share" / "local_features_ros"
    for name, mod in _fake_launch_modules(share).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("extractor_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, share


def _run_opaque(ld, values):
    opaque = [a for a in ld.args[0] if type(a).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    ctx = types.SimpleNamespace(launch_configurations=values)
    return opaque[0].kwargs["function"](ctx)


def test_launch_file_parses_and_declares_generate_function():
    tree = ast.parse(LAUNCH_FILE.read_text())
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert {"Node", "DeclareLaunchArgument", "OpaqueFunction", "LAUNCH_ARGS",
            "validate_node_params", "rviz_config"} <= imported


def test_launch_arguments_match_design_and_runner(launch_module):
    from local_features_ros.ros.commands import run as run_cmd
    from local_features_ros.ros.runner import LAUNCH_ARGS

    mod, _ = launch_module
    ld = mod.generate_launch_description()
    declared = {a.args[0]: a.kwargs["default_value"] for a in ld.args[0]
                if type(a).__name__ == "DeclareLaunchArgument"}
    assert set(declared) == EXPECTED_ARGS
    assert declared == {a.name: a.default for a in LAUNCH_ARGS}
    # The runner's options take the same defaults (the one table behind both).
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    ns = parser.parse_args([])
    assert ns.config == declared["params_file"] == "config/extractor.yaml"
    assert ns.method == declared["method"] == ""
    assert ns.namespace == declared["namespace"] == ""
    assert ns.use_sim_time is False and declared["use_sim_time"] == "false"


def test_launch_node_actions(launch_module):
    mod, share = launch_module
    ld = mod.generate_launch_description()
    values = {"method": "orb", "params_file": "config/extractor.yaml", "namespace": "cam0",
              "image": "/cam0/image_raw", "camera_info": "/cam0/camera_info",
              "use_sim_time": "true", "rviz": "false"}
    (node,) = _run_opaque(ld, values)
    kw = node.kwargs
    assert kw["package"] == "local_features_ros"
    assert kw["executable"] == "feature_extractor" and kw["name"] == "feature_extractor"
    assert kw["namespace"] == "cam0"
    # method:=orb with the default params_file loads the method's own YAML (method units).
    assert kw["parameters"] == [str(share / "config" / "orb.yaml"),
                                {"use_sim_time": True, "method": "orb"}]
    assert sorted(kw["remappings"]) == sorted([
        ("image", "/cam0/image_raw"), ("image/compressed", "/cam0/image_raw/compressed"),
        ("camera_info", "/cam0/camera_info")])
    assert kw["output"] == "screen"

    # Empty method keeps the YAML's; an absolute params_file is used as given; default topics
    # need no remapping.
    values.update(method="", params_file="/abs/orb.yaml", image="image",
                  camera_info="camera_info", use_sim_time="false")
    (node,) = _run_opaque(ld, values)
    assert node.kwargs["parameters"] == ["/abs/orb.yaml", {"use_sim_time": False}]
    assert node.kwargs["remappings"] == []
    # Empty method + default params_file: the default YAML.
    values.update(params_file="config/extractor.yaml")
    (node,) = _run_opaque(ld, values)
    assert node.kwargs["parameters"][0] == str(share / "config" / "extractor.yaml")
    # An explicit params_file wins over the method's YAML.
    values.update(method="sift", params_file="/abs/custom.yaml")
    (node,) = _run_opaque(ld, values)
    assert node.kwargs["parameters"][0] == "/abs/custom.yaml"

    assert not [a for a in ld.args[0] if type(a).__name__ == "Node"]  # rviz only when asked


def test_launch_rviz_follows_namespace_and_image(launch_module):
    """rviz:=true starts rviz2 with the shipped config rewritten for namespace/image."""
    mod, share = launch_module
    (share / "rviz").mkdir(parents=True)
    shutil.copy2(REPO / "rviz" / "extractor.rviz", share / "rviz" / "extractor.rviz")
    ld = mod.generate_launch_description()
    values = {"method": "", "params_file": "/abs/orb.yaml", "namespace": "cam0",
              "image": "/cam0/image_raw", "camera_info": "camera_info",
              "use_sim_time": "false", "rviz": "true"}
    node, rviz = _run_opaque(ld, values)
    assert rviz.kwargs["executable"] == "rviz2"
    flag, path = rviz.kwargs["arguments"]
    assert flag == "-d"
    cfg = yaml.safe_load(Path(path).read_text())
    topics = {d["Name"]: d["Topic"]["Value"] for d in cfg["Visualization Manager"]["Displays"]}
    assert topics == {"Feature overlay": "/cam0/feature_extractor/overlay",
                      "Input image": "/cam0/image_raw"}
    os.unlink(path)
    values.update(namespace="", image="image")
    _, rviz = _run_opaque(ld, values)
    path = rviz.kwargs["arguments"][1]
    assert Path(path).read_text() == (REPO / "rviz" / "extractor.rviz").read_text()
    os.unlink(path)


def test_launch_default_method_is_chosen_for_the_hardware(launch_module):
    """The default YAML's ``method: auto`` becomes the hardware's choice (logged with its reason),
    with that method's own YAML; an explicit method still wins."""
    from local_features_ros.hardware import choose_method

    mod, share = launch_module
    shutil.copytree(REPO / "config", share / "config")
    ld = mod.generate_launch_description()
    values = {"method": "", "params_file": "config/extractor.yaml", "namespace": "",
              "image": "image", "camera_info": "camera_info", "use_sim_time": "false",
              "rviz": "false"}
    log, node = _run_opaque(ld, values)
    chosen = choose_method("auto")
    assert log.kwargs["msg"] == f"method auto -> {chosen.method}: {chosen.reason}"
    assert node.kwargs["parameters"] == [str(share / "config" / f"{chosen.method}.yaml"),
                                         {"use_sim_time": False, "method": chosen.method}]
    values.update(method="sift")
    (node,) = _run_opaque(ld, values)
    assert node.kwargs["parameters"][1]["method"] == "sift"


def test_launch_checks_parameters_before_starting(launch_module):
    """The launch file runs the same parameter check as `run`/`demo` (ros/validate.py)."""
    from local_features_ros.conventions import ConfigError

    mod, share = launch_module
    shutil.copytree(REPO / "config", share / "config")
    ld = mod.generate_launch_description()
    values = {"method": "foo", "params_file": "config/extractor.yaml", "namespace": "",
              "image": "image", "camera_info": "camera_info", "use_sim_time": "false",
              "rviz": "false"}
    with pytest.raises(ConfigError, match=r"unknown method 'foo' \(available: .*orb"):
        _run_opaque(ld, values)
    bad = share / "bad.yaml"
    text = (share / "config" / "orb.yaml").read_text()
    bad.write_text(text.replace("    max_keypoints: 1000", "    max_keypoints: 1000\n    foo: 1"))
    values.update(method="", params_file=str(bad))
    with pytest.raises(ConfigError, match="unknown parameter 'foo' for method 'orb' .known: "):
        _run_opaque(ld, values)
    bad.write_text(text.replace("    max_keypoints: 1000", "    max_keypoints: many"))
    with pytest.raises(ConfigError, match="'max_keypoints' must be an integer"):
        _run_opaque(ld, values)
    values.update(params_file="config/orb.yaml")
    (node,) = _run_opaque(ld, values)  # the shipped file passes


def test_rviz_config_shows_reliable_overlay():
    cfg = yaml.safe_load((REPO / "rviz" / "extractor.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    overlay = [d for d in displays if d["Topic"]["Value"] == "/feature_extractor/overlay"]
    assert len(overlay) == 1 and overlay[0]["Enabled"] is True
    assert overlay[0]["Class"] == "rviz_default_plugins/Image"
    # The node publishes reliable; a reliable display subscription is compatible.
    assert overlay[0]["Topic"]["Reliability Policy"] == "Reliable"


def test_console_script_targets_exist():
    setup_src = (REPO / "setup.py").read_text()
    for script, target in (("feature_extractor", "local_features_ros.ros.extractor_node:main"),
                           ("synthetic_camera", "local_features_ros.ros.synthetic_camera:main")):
        assert f"{script} = {target}" in setup_src
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.slow
def test_colcon_build_installs_package(tmp_path):
    venv_bin = REPO / ".venv" / "bin"
    colcon = venv_bin / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed in .venv")
    src = tmp_path / "src" / "local_features_ros"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("package.xml", "setup.py", "setup.cfg"):
        shutil.copy2(REPO / name, src / name)
    for name in ("resource", "launch", "config", "rviz", "local_features_ros", "training"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    build, install = tmp_path / "build", tmp_path / "install"
    proc = subprocess.run(
        [str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths",
         str(tmp_path / "src"), "--build-base", str(build), "--install-base", str(install)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    share = install / "local_features_ros" / "share" / "local_features_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "extractor.launch.py").is_file()
    assert (share / "config" / "extractor.yaml").is_file()
    assert (share / "config" / "orb.yaml").is_file()
    assert (share / "rviz" / "extractor.rviz").is_file()
    lib = install / "local_features_ros" / "lib" / "local_features_ros"
    for exe in ("feature_extractor", "synthetic_camera", "bag_player"):
        assert (lib / exe).is_file(), sorted(p.name for p in lib.iterdir()) if lib.is_dir() else lib
    marker = (install / "local_features_ros" / "share" / "ament_index" / "resource_index"
              / "packages" / "local_features_ros")
    assert marker.is_file()
    # the training/ folder installs under the project's namespace, never as a top-level "training"
    site = sorted((install / "local_features_ros" / "lib").glob("python3*/site-packages"))
    assert site, sorted(p.name for p in (install / "local_features_ros" / "lib").iterdir())
    assert not (site[0] / "training").exists()
    pkg = site[0] / "local_features_ros_training"
    assert (pkg / "commands" / "train.py").is_file() and (pkg / "spec.py").is_file()
    assert (pkg / "configs" / "superpoint_pipeline.yaml").is_file()
    # ... and works from there, outside the checkout: every method's training is declared
    code = ("import local_features_ros_training.spec as s, local_features_ros_training.config as c; "
            "print(sorted(s.find_specs()), c.CONFIG_DIR)")
    run_env = dict(env, PYTHONPATH=str(site[0]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=run_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'superpoint'" in out.stdout and "'lift'" in out.stdout and str(pkg) in out.stdout


def test_package_xml_declares_what_the_code_imports():
    """rosdep installs exactly what the ROS side uses: every ROS package dependency is imported
    by the node code or the launch file, and every ROS import is declared (no cv_bridge)."""
    import ast
    import xml.etree.ElementTree as ET

    root = Path(__file__).resolve().parents[2]
    deps = {e.text.strip() for e in ET.parse(root / "package.xml").getroot().iter("exec_depend")}
    ros_deps = {d for d in deps if not d.startswith("python3-") and d != "rviz2"}
    imported: set[str] = set()
    for path in [*(root / "local_features_ros").rglob("*.py"), *(root / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            imported |= {n.split(".")[0] for n in names}
    ros_imports = {n for n in imported if n in {"rclpy", "launch", "launch_ros", "tf2_ros"}
                   or n.endswith("_msgs") or n.endswith("_interfaces")}
    assert ros_deps == ros_imports, (ros_deps ^ ros_imports)
    assert "cv_bridge" not in deps


def test_robot_requirements_leave_apt_packages_alone():
    """PEP 668 robots: the venv over the sourced ROS 2 gets only what rosdep cannot give (no
    numpy/OpenCV pins that shadow apt's, no torch -- the CUDA build is installed first -- and no
    dev tools); installed executables use the active environment's python."""
    import configparser

    lines = [line.split("#")[0].strip() for line in
             (REPO / "requirements-robot.txt").read_text().splitlines()]
    names = {line.split("==")[0].lower() for line in lines if line}
    assert names and "kornia" in names
    assert not names & {"numpy", "torch", "opencv-python", "opencv-python-headless", "pyyaml",
                        "scipy", "tqdm", "pytest", "pytest-timeout", "colcon-core", "colcon-ros"}
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["build_scripts"]["executable"] == "/usr/bin/env python3"
    readme = (REPO / "README.md").read_text()
    assert "rosdep install --from-paths src --ignore-src -y" in readme
    assert "--system-site-packages" in readme and "requirements-robot.txt" in readme
