"""Shared fixtures. Every ROS process started by a test gets loopback-only DDS and its own domain."""

from __future__ import annotations

import os
import random

# Before torch loads OpenMP: passive waiting (spinning threads slow every torch test 10-20x when
# the 2 cores are shared with ROS processes the tests start).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# Tests live in folders that mirror the package (test/<layer>/test_<module>.py) and share helpers
# across them (``from test_node import Harness``): every layer folder is importable.
for _layer in sorted(Path(__file__).resolve().parent.iterdir()):
    if _layer.is_dir() and not _layer.name.startswith(("_", ".")) and str(_layer) not in sys.path:
        sys.path.insert(0, str(_layer))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# DDS must never leave loopback in tests; each pytest run gets its own domain.
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 199)))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: CUDA present: tests marked ``gpu`` (and the ``cuda`` case of the ``device`` fixture) run;
#: without it they are skipped, so the same suite serves a CPU machine and a GPU one.
HAVE_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device a tensor path runs on: the CPU always, CUDA where there is one."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Floating-point types a tensor path accepts (descriptors, keypoints)."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for ROS subprocesses: loopback DDS, a fresh domain id per test."""
    env = dict(os.environ)
    env["ROS_LOCALHOST_ONLY"] = "1"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(random.randint(100, 199))
    env["OMP_NUM_THREADS"] = "1"
    return env


def textured_image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A gray uint8 image with corners and blobs (features for every detector)."""
    import cv2

    r = np.random.default_rng(seed)
    img = (cv2.GaussianBlur(r.integers(0, 255, (h // 8, w // 8)).astype(np.uint8), (3, 3), 0))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
    for _ in range(12):
        x0, y0 = int(r.integers(0, w - 40)), int(r.integers(0, h - 40))
        cv2.rectangle(img, (x0, y0), (x0 + int(r.integers(10, 40)), y0 + int(r.integers(10, 40))),
                      int(r.integers(0, 255)), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def rectangle_frames(folder, n: int = 4, h: int = 96, w: int = 128, rects: int = 6,
                     max_xy: int = 100, max_size: int = 28):
    """``n`` gray PNG frames of ``rects`` bright rectangles (corners to detect) on a dark
    background, in a new ``folder`` (returned): tiny training images for the SuperPoint tests."""
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((h, w), 40, np.uint8)
        for _ in range(rects):
            x, y = (int(v) for v in rng.integers(0, max_xy, 2))
            rw, rh = (int(v) for v in rng.integers(8, max_size, 2))
            cv2.rectangle(img, (x, y), (x + rw, y + rh), int(rng.integers(100, 255)), -1)
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return folder
