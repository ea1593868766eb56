"""Core contracts: Features, config validation, registry errors, safe checkpoint I/O, resize."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from local_features_ros.extractors.base import ConfigError, _coerce
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
        "assert 'training' not in sys.modules, 'runtime imported training'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_atomic_save_has_normal_file_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.pth", "m", {"w": torch.ones(1)})
    finally:
        os.umask(umask)
    assert (p.stat().st_mode & 0o777) == 0o644
