"""Adding a method is one module: a throwaway method declared only by a module + entry point.

The plugin lives in a temporary folder put on ``PYTHONPATH`` with a ``*.dist-info`` folder holding
its ``entry_points.txt`` (the mechanism an installed plugin package uses). Nothing in
``local_features_ros`` names it, yet it must appear in ``methods``, in the runner's generated
YAML, in ``extract`` and in the node's parameter list (and the node must run it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import textured_image

PLUGIN = textwrap.dedent('''
    """A toy method: local maxima of the blurred image, 3x3 patches as descriptors."""
    from typing import Any, ClassVar

    import torch
    import torch.nn.functional as F

    from local_features_ros.extractors.base import ConfigError, Extractor
    from local_features_ros.types import Features


    class Throwaway(Extractor):
        name: ClassVar[str] = "throwaway"
        summary: ClassVar[str] = "Throwaway plugin method (tests only)."
        licence: ClassVar[str] = "test licence"
        is_learned: ClassVar[bool] = False
        default_conf: ClassVar[dict[str, Any]] = {"max_keypoints": 50, "blur": 2}
        runtime_keys: ClassVar[frozenset[str]] = frozenset({"max_keypoints", "blur"})

        def validate_conf(self, conf):
            super().validate_conf(conf)
            if int(conf["blur"]) < 1:
                raise ConfigError("blur must be >= 1")

        @property
        def descriptor_dim(self) -> int:
            return 9

        def _extract(self, image: torch.Tensor) -> Features:
            k = 2 * int(self.conf["blur"]) + 1
            s = F.avg_pool2d(image[:, :1], k, 1, k // 2)
            peak = (s == F.max_pool2d(s, 5, 1, 2)) & (s > 0.05)
            ys, xs = torch.nonzero(peak[0, 0], as_tuple=True)
            patches = F.unfold(F.pad(image[:, :1], (1, 1, 1, 1), mode="replicate"), 3)[0]
            desc = patches[:, ys * image.shape[-1] + xs].T
            desc = F.normalize(desc - desc.mean(1, keepdim=True), dim=1)
            h, w = image.shape[-2:]
            return Features(torch.stack([xs, ys], 1).float(), s[0, 0, ys, xs], desc,
                            image_size=(int(w), int(h)))
''')


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    root = tmp_path / "plugin"
    (root / "lfr_throwaway").mkdir(parents=True)
    (root / "lfr_throwaway" / "__init__.py").write_text(PLUGIN)
    dist = root / "lfr_throwaway-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lfr-throwaway\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[local_features_ros.methods]\nthrowaway = lfr_throwaway\n")
    return root


def _env(plugin: Path, base: dict | None = None) -> dict:
    env = dict(base or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def _cli(plugin: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_features_ros.cli", *args],
                          env=_env(plugin), capture_output=True, text=True, timeout=120)


def test_plugin_method_in_methods_yaml_and_extract(plugin_path, tmp_path):
    r = _cli(plugin_path, "methods")
    assert r.returncode == 0, r.stderr
    assert "throwaway: Throwaway plugin method" in r.stdout and "blur=2" in r.stdout
    y = _cli(plugin_path, "run", "--print-config", "throwaway")
    assert y.returncode == 0, y.stderr
    assert "method: throwaway" in y.stdout and "blur: 2" in y.stdout
    assert "Licence: test licence" in y.stdout
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), textured_image(96, 128))
    e = _cli(plugin_path, "extract", "--method", "throwaway", "--set", "blur=1",
             "--out", str(tmp_path / "out"), str(img))
    assert e.returncode == 0, e.stderr
    out = list((tmp_path / "out").iterdir())
    assert out, "extract wrote nothing"
    # without the plugin on the path the method is unknown, with the available ones listed
    bad = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "extract", "--method",
                          "throwaway", "--out", str(tmp_path / "o2"), str(img)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown method 'throwaway'" in bad.stderr
    assert "superpoint" in bad.stderr


def test_plugin_method_runs_in_the_node(plugin_path, ros_env, tmp_path):
    pytest.importorskip("rclpy")
    from rcl_interfaces.srv import ListParameters

    from test_node import Harness, image_msg, start_node, stop_node

    env = _env(plugin_path, ros_env)
    log = tmp_path / "node.log"
    proc = start_node(env, log, method="throwaway", publish_overlay=False)
    harness = Harness(int(env["ROS_DOMAIN_ID"]))
    try:
        harness.wait_ready(proc)
        client = harness.node.create_client(ListParameters, "/feature_extractor/list_parameters")
        assert harness.spin_until(client.service_is_ready, 10.0)
        fut = client.call_async(ListParameters.Request())
        harness.spin_until(fut.done, 10.0)
        names = set(fut.result().result.names)
        assert "extractor.blur" in names and "max_keypoints" in names, sorted(names)
        rgb = np.repeat(textured_image(96, 128)[..., None], 3, axis=2)
        harness.prime(lambda st: image_msg(rgb, "rgb8", st))
        assert len(harness.got["features"]) >= 1
        assert harness.got["features"][-1].width > 0  # keypoints published
    finally:
        code = stop_node(proc)
        harness.close()
    assert code in (0, -15), log.read_text()[-2000:]


def test_a_package_declares_the_classes_its_init_imports_from_its_submodules(tmp_path, monkeypatch):
    """A method split into modules (``extractors/lift/``) is found through its package: the
    registry takes what ``__init__`` imports from the package's own submodules and skips classes
    imported from anywhere else."""
    import importlib

    from local_features_ros.extractors.base import Extractor
    from local_features_ros.registry import declared_classes, method_classes

    pkg = tmp_path / "lfr_split_method"
    pkg.mkdir()
    (pkg / "impl.py").write_text(PLUGIN)
    (pkg / "__init__.py").write_text("from .impl import Throwaway\n"
                                     "from local_features_ros.extractors.lift import LIFT\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("lfr_split_method")
    assert [c.__name__ for c in declared_classes(module, Extractor)] == ["Throwaway"]
    impl = importlib.import_module("lfr_split_method.impl")
    assert [c.__name__ for c in declared_classes(impl, Extractor)] == ["Throwaway"]
    classes = method_classes()
    assert classes["lift"].__module__ == "local_features_ros.extractors.lift.extractor"
    assert classes["lfnet"].__module__ == "local_features_ros.extractors.lfnet.extractor"
