"""Core contracts: Features, config validation, registry errors, safe checkpoint I/O, resize."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from local_features_ros.config import coerce as _coerce
from local_features_ros.extractors.base import ConfigError
from local_features_ros.image.preprocess import ResizeInfo, prepare_image, target_size
from local_features_ros.registry import build_extractor, get_extractor_class
from local_features_ros.types import Features
from local_features_ros.weights import WeightsError, load_checkpoint, save_checkpoint


def test_features_roundtrip_numpy():
    f = Features(torch.rand(5, 2), torch.rand(5), torch.rand(5, 8), image_size=(64, 48))
    d = f.numpy()
    assert d["keypoints"].dtype == np.float32 and d["descriptors"].shape == (5, 8)
    assert list(d["image_size"]) == [64, 48]
    g = Features.from_numpy(d)
    assert torch.allclose(g.keypoints, f.keypoints) and g.image_size == (64, 48)
    assert len(Features.empty(16)) == 0


def test_features_shape_errors():
    with pytest.raises(ValueError):
        Features(torch.rand(5, 3), torch.rand(5), torch.rand(5, 8))
    with pytest.raises(ValueError):
        Features(torch.rand(5, 2), torch.rand(4), torch.rand(5, 8))


def test_unknown_method_lists_available():
    with pytest.raises(ConfigError, match="available"):
        get_extractor_class("nope")


def test_coerce_types():
    assert _coerce("k", "5", 1) == 5 and _coerce("k", "0.5", 0.1) == 0.5
    assert _coerce("k", "false", True) is False
    with pytest.raises(ConfigError):
        _coerce("k", "abc", 1)
    with pytest.raises(ConfigError):
        _coerce("k", "nan", 0.1)


def test_resize_roundtrip_of_coordinates():
    info = ResizeInfo((640, 480), (320, 240))
    pts = torch.tensor([[0.0, 0.0], [639.0, 479.0], [100.25, 50.5]])
    assert torch.allclose(info.to_original(info.to_network(pts)), pts, atol=1e-5)
    # pixel-centre convention: network pixel 0 covers original pixels 0..1 -> centre 0.5
    assert torch.allclose(info.to_original(torch.tensor([[0.0, 0.0]])), torch.tensor([[0.5, 0.5]]))
    assert target_size(1000, 500, max_edge=500, multiple_of=8) == (496, 248)
    t, info = prepare_image(np.zeros((30, 50, 3), np.uint8), 1, max_edge=25)
    assert t.shape == (1, 1, 15, 25) and info.orig_size == (50, 30)
    with pytest.raises(ValueError):
        prepare_image(np.zeros((0, 5), np.uint8), 1)


def test_checkpoint_atomic_roundtrip_and_safe_load(tmp_path):
    p = save_checkpoint(tmp_path / "a.pth", "m", {"w": torch.ones(2)}, {"x": 1}, step=3)
    ck = load_checkpoint(p)
    assert ck["method"] == "m" and ck["step"] == 3 and torch.equal(ck["state_dict"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_checkpoint(tmp_path / "bad.pth")


def test_core_never_imports_rclpy():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "import local_features_ros, local_features_ros.registry, local_features_ros.cli\n"
        "import importlib, pkgutil\n"
        "import local_features_ros as p\n"
        "for m in pkgutil.walk_packages(p.__path__, 'local_features_ros.'):\n"
        "    if '.ros' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'local_features_ros_training')]\n"
        "assert not bad, f'runtime imported training: {bad}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


PACKAGE_DIR = Path(__file__).resolve().parents[2] / "local_features_ros"
#: Top-level names of ROS packages (plus any ``*_msgs``, ``*_srvs``, ``*_interfaces``, ``rosidl*``).
ROS_TOP_LEVEL = {"rclpy", "launch", "launch_ros", "launch_testing", "ament_index_python",
                 "cv_bridge", "message_filters", "tf2_ros", "rosbag2_py"}


def _is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return (top in ROS_TOP_LEVEL or top.startswith("rosidl")
            or top.endswith(("_msgs", "_srvs", "_interfaces"))
            or module == "local_features_ros.ros" or module.startswith("local_features_ros.ros."))


def _import_statements(path: Path, root: Path = PACKAGE_DIR.parent
                       ) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, names) of every import statement in ``path``, at any depth
    (functions, classes, ``if TYPE_CHECKING``, try blocks). ``names`` is empty for ``import X``
    and holds what ``from X import a, b`` takes; relative modules are resolved against the
    package of ``path`` below ``root`` (the directory that holds the top-level package)."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    out: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                assert len(base) == len(package) - node.level + 1, f"{path}: import beyond the top"
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module, tuple(a.name for a in node.names if a.name != "*")))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` (``_import_statements``);
    ``from X import name`` yields ``X`` and also ``X.name`` (``name`` may be a submodule:
    ``from local_features_ros import ros``)."""
    out: list[tuple[int, str]] = []
    for line, module, names in _import_statements(path):
        out.append((line, module))
        out += [(line, f"{module}.{name}") for name in names]
    return out


def _core_files() -> list[Path]:
    ros_dir = PACKAGE_DIR / "ros"
    return [p for p in sorted(PACKAGE_DIR.rglob("*.py")) if ros_dir not in p.parents]


def test_import_scan_resolves_relative_imports():
    """The scanner itself: relative imports at any depth resolve to absolute names."""
    found = dict((m, n) for n, m in _imports(PACKAGE_DIR / "ros" / "commands" / "demo.py"))
    assert "local_features_ros.hardware" in found  # ``from ...hardware import`` in a function
    assert "local_features_ros.ros.diagnostics" in found and "rclpy" in found
    assert _is_ros("local_features_ros.ros") and _is_ros("sensor_msgs.msg")
    assert _is_ros("rcl_interfaces.msg") and _is_ros("rosidl_runtime_py")
    assert not _is_ros("local_features_ros.registry") and not _is_ros("rosbags.highlevel")


def test_core_has_no_ros_or_training_import_at_any_depth():
    """No module outside ``local_features_ros/ros/`` imports rclpy, ROS message/interface
    packages, launch, or ``local_features_ros.ros`` -- also not lazily inside a function (the
    import-time check above cannot see those); runtime code never imports ``training``."""
    files = _core_files()
    assert len(files) > 30 and PACKAGE_DIR / "cli.py" in files
    bad = []
    for path in files:
        for line, module in _imports(path):
            if _is_ros(module) or module.split(".")[0] in ("training", "local_features_ros_training"):
                bad.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {module}")
    assert not bad, "ROS or training imported outside local_features_ros/ros/:\n" + "\n".join(bad)


def test_atomic_save_has_normal_file_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.pth", "m", {"w": torch.ones(1)})
    finally:
        os.umask(umask)
    assert (p.stat().st_mode & 0o777) == 0o644
