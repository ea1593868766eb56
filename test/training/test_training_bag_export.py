"""bag-to-dataset: synthetic bags (raw + compressed + corrupt messages, sqlite3 and MCAP),
time-range selection, time and motion subsampling, manifest contents."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from local_features_ros.bags import write_synthetic_bag
from local_features_ros_training.data.bag_export import export_bag, image_motion

T0 = 1000.0
RAW, COMP = "/camera/image_raw", "/camera/image_raw/compressed"


def _frames(n: int, static_until: int = 0) -> list[tuple[float, np.ndarray]]:
    """RGB 48x64 frames every 0.1 s; the first ``static_until`` frames are identical."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (12, 16, 3)).astype(np.uint8), (64, 48),
                      interpolation=cv2.INTER_NEAREST)
    out = []
    for i in range(n):
        shift = 0 if i < static_until else (i - static_until + 1) * 4
        out.append((T0 + 0.1 * i, np.roll(base, shift, axis=1).copy()))
    return out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_export_all_frames_skips_corrupt(tmp_path, storage):
    frames = _frames(10)
    bag = write_synthetic_bag(tmp_path / "bag", frames, storage=storage, corrupt_every=4)
    res = export_bag(bag, tmp_path / "ds")
    # frames 3 and 7 are corrupt on both topics: 4 bad messages, 16 good ones
    assert res.read == 16 and res.skipped == 4 and res.frames == 16
    assert res.reasons.get("size_mismatch", 0) == 2 and sum(res.reasons.values()) == 4
    assert sorted(res.topics) == sorted([RAW, COMP])
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    rows = manifest["frames"]
    good = [i for i in range(10) if (i + 1) % 4 != 0]
    raw_rows = [r for r in rows if r["topic"] == RAW]
    assert [round(r["stamp"] - T0, 3) for r in raw_rows] == [round(0.1 * i, 3) for i in good]
    for r, i in zip(raw_rows, good):
        img = cv2.imread(str(tmp_path / "ds" / r["file"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(img[..., ::-1], frames[i][1])  # lossless raw frame
    comp = [r for r in rows if r["topic"] == COMP]
    img = cv2.imread(str(tmp_path / "ds" / comp[0]["file"]))[..., ::-1].astype(float)
    err = np.abs(img - frames[0][1]).mean()
    assert err < 25 and err < np.abs(img[..., ::-1] - frames[0][1]).mean()  # JPEG, RGB order
    info = manifest["result"]["camera_info"]["/camera/camera_info"]
    assert info["width"] == 64 and info["height"] == 48 and len(info["K"]) == 3
    with open(tmp_path / "ds" / "manifest.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["file"] for r in csv_rows] == [r["file"] for r in rows]


def test_topic_time_range_and_min_dt(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", _frames(10), corrupt_every=4)
    r = export_bag(bag, tmp_path / "a", topics=[RAW], start=0.25, end=0.75, relative=True)
    # relative [0.25, 0.75): frames 3..7 minus corrupt 3 and 7 -> 4, 5, 6
    rows = json.loads((tmp_path / "a" / "manifest.json").read_text())["frames"]
    assert [round(x["stamp"] - T0, 2) for x in rows] == [0.4, 0.5, 0.6]
    assert r.skipped == 2
    r = export_bag(bag, tmp_path / "b", topics=[RAW], min_dt=0.25)
    rows = json.loads((tmp_path / "b" / "manifest.json").read_text())["frames"]
    # good stamps 0 .1 .2 .4 .5 .6 .8 .9; keep when >= 0.25 s after the last kept: 0, .4, .8
    assert [round(x["stamp"] - T0, 2) for x in rows] == [0.0, 0.4, 0.8]
    assert r.dropped_time == 5
    r = export_bag(bag, tmp_path / "c", topics=[RAW], start=T0 + 0.45, end=T0 + 0.65)
    assert r.frames == 2


def test_motion_subsampling(tmp_path):
    frames = _frames(8, static_until=4)  # 0..3 identical, then 4 px shift per frame
    bag = write_synthetic_bag(tmp_path / "bag", frames, compressed_topic=None)
    r = export_bag(bag, tmp_path / "d", min_motion=1.0, motion_metric="diff")
    rows = json.loads((tmp_path / "d" / "manifest.json").read_text())["frames"]
    assert [round(x["stamp"] - T0, 1) for x in rows] == [0.0, 0.4, 0.5, 0.6, 0.7]
    assert r.dropped_motion == 3
    # flow magnitude of a pure 4-px shift (full-resolution pixels)
    a = cv2.cvtColor(frames[4][1], cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(frames[5][1], cv2.COLOR_RGB2GRAY)
    assert image_motion(a, a, "flow") < 0.1
    assert 2.0 < image_motion(a, b, "flow", 64) < 6.0
    r = export_bag(bag, tmp_path / "e", min_motion=2.0, motion_metric="flow")
    assert r.frames == 5


def test_cli_and_bad_bag(tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", _frames(4), corrupt_every=2, storage="mcap")
    p = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "bag-to-dataset", str(bag),
                        "--out", str(tmp_path / "ds"), "--topic", COMP],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["frames"] == 2 and out["skipped"] == 2 and out["reasons"] == {"corrupt": 2}
    p = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "bag-to-dataset",
                        str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "error" in p.stderr
