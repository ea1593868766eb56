"""The cornerness diagnostic (experiments/bench_keypoint_cornerness.py) tells edges from corners."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "bench_keypoint_cornerness", ROOT / "experiments" / "bench_keypoint_cornerness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_eigen_ratio_is_low_on_an_edge_and_high_on_a_corner(capsys, tmp_path):
    mod = _module()
    img = np.zeros((80, 80), np.uint8)
    img[20:60, 20:60] = 200  # a bright square: corners at (20, 20)..., straight edges between
    pts = np.array([[20.0, 20.0], [40.0, 20.0], [20.0, 40.0], [40.0, 40.0]])
    r = mod.eigen_ratio(img, pts)
    assert r[0] > 0.5  # corner: both directions change
    assert r[1] < mod.EDGE_RATIO and r[2] < mod.EDGE_RATIO  # middle of the top and left edges
    assert r[3] == 0.0  # flat inside: no gradient at all
    # the CLI end to end on a generated image with the classical detector alone
    import cv2

    big = np.zeros((200, 200), np.uint8)
    big[60:140, 60:140] = 200
    cv2.imwrite(str(tmp_path / "sq.png"), big)
    assert mod.main([str(tmp_path / "sq.png"), "--methods", "orb"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| sq.png |")]
    n, edge_like, _ = (v.strip() for v in row[0].split("|")[2].split("/"))
    assert int(n) > 0 and 0.0 <= float(edge_like) <= 1.0
