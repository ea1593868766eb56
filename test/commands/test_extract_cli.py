"""``local-features extract``: the npz file contract, methods orb and superpoint, error exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import textured_image

from local_features_ros.cli import main as cli_main

KEYS = {"keypoints", "scores", "scales", "orientations", "descriptors", "image_size"}


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    gray = textured_image(96, 128, seed=1)
    color = np.stack([textured_image(80, 112, seed=s) for s in (2, 3, 4)], axis=2)  # BGR on disk
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "color.png"), color)
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    deep = (textured_image(64, 80, seed=5).astype(np.uint16) * 257)
    single = tmp_path / "deep16.png"
    cv2.imwrite(str(single), deep)
    return {"dir": folder, "gray": folder / "gray.png", "color": folder / "color.png", "deep": single}


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _official_layout_weights(path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    layers = [("conv1a", 64, 1, 3), ("conv1b", 64, 64, 3), ("conv2a", 64, 64, 3),
              ("conv2b", 64, 64, 3), ("conv3a", 128, 64, 3), ("conv3b", 128, 128, 3),
              ("conv4a", 128, 128, 3), ("conv4b", 128, 128, 3), ("convPa", 256, 128, 3),
              ("convPb", 65, 256, 1), ("convDa", 256, 128, 3), ("convDb", 256, 256, 1)]
    sd = {}
    for name, co, ci, k in layers:
        sd[f"{name}.weight"] = torch.randn(co, ci, k, k, generator=g) * (2.0 / (ci * k * k)) ** 0.5
        sd[f"{name}.bias"] = torch.zeros(co)
    sd["convPb.weight"] *= 4.0
    sd["convPb.bias"][64] = 8.0
    torch.save(sd, str(path))


def test_extract_orb_folder_and_file(images, tmp_path):
    out = tmp_path / "out"
    rc = cli_main(["extract", "--method", "orb", "--out", str(out), str(images["dir"]), str(images["deep"])])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["color.npz", "deep16.npz", "gray.npz"]
    g = _load(out / "gray.npz")
    assert set(g) == KEYS
    n = len(g["keypoints"])
    assert g["keypoints"].dtype == np.float32 and g["keypoints"].shape == (n, 2) and n > 10
    assert g["descriptors"].dtype == np.float32 and g["descriptors"].shape == (n, 256)
    for k in ("scores", "scales", "orientations"):
        assert g[k].shape == (n,) and g[k].dtype == np.float32
    assert g["image_size"].tolist() == [128, 96]  # [width, height]
    # independent expectation: OpenCV ORB on the same file, same settings
    kps, raw = cv2.ORB_create(nfeatures=1000).detectAndCompute(cv2.imread(str(images["gray"]), 0), None)
    np.testing.assert_allclose(g["keypoints"], np.array([k.pt for k in kps], np.float32), atol=1e-4)
    np.testing.assert_array_equal(g["descriptors"], np.unpackbits(raw, axis=1).astype(np.float32))
    np.testing.assert_allclose(g["orientations"], np.radians([k.angle for k in kps]), rtol=1e-5)
    # colour file: read as BGR, converted to RGB, then gray with RGB weights == OpenCV BGR2GRAY
    c = _load(out / "color.npz")
    bgr = cv2.imread(str(images["color"]), cv2.IMREAD_UNCHANGED)
    kps_c, _ = cv2.ORB_create(nfeatures=1000).detectAndCompute(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), None)
    np.testing.assert_allclose(c["keypoints"], np.array([k.pt for k in kps_c], np.float32), atol=1e-4)
    assert c["image_size"].tolist() == [112, 80]
    # 16-bit file: same content as 8-bit * 257 -> same ORB features as the 8-bit image
    d = _load(out / "deep16.npz")
    kps_d, _ = cv2.ORB_create(nfeatures=1000).detectAndCompute(textured_image(64, 80, seed=5), None)
    np.testing.assert_allclose(d["keypoints"], np.array([k.pt for k in kps_d], np.float32).reshape(-1, 2),
                               atol=1e-4)


def test_extract_superpoint_with_settings(images, tmp_path):
    weights = tmp_path / "superpoint_v1.pth"
    _official_layout_weights(weights)
    out = tmp_path / "sp"
    argv = ["extract", "--method", "superpoint", "--weights", str(weights), "--precision", "fp32",
            "--set", "max_keypoints=30", "--set", "nms=official", "--set", "resize_max_edge=64",
            "--out", str(out), str(images["gray"])]
    assert cli_main(argv) == 0
    f = _load(out / "gray.npz")
    assert f["keypoints"].shape == (30, 2) and f["descriptors"].shape == (30, 256)
    np.testing.assert_allclose(np.linalg.norm(f["descriptors"], axis=1), 1.0, atol=1e-5)
    assert f["image_size"].tolist() == [128, 96]
    # resized to 64x48 for the network, keypoints back in original pixels: x = (x_n + .5) * 2 - .5
    xn = (f["keypoints"] + 0.5) / 2.0 - 0.5
    np.testing.assert_allclose(xn, np.round(xn), atol=1e-4)
    assert np.all(np.diff(f["scores"]) <= 0) and np.allclose(f["scales"], 2.0)
    assert f["keypoints"][:, 0].max() < 128 and f["keypoints"][:, 1].max() < 96


@pytest.mark.parametrize("case", ["missing", "unreadable", "method", "set_syntax", "set_key",
                                  "set_value", "empty_dir", "weights", "out_is_file"])
def test_bad_input_exits_nonzero_with_one_line(images, tmp_path, capsys, case):
    out = str(tmp_path / "o")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = {
        "missing": ["--method", "orb", "--out", out, str(tmp_path / "nope.png")],
        "unreadable": ["--method", "orb", "--out", out, str(bad)],
        "method": ["--method", "surf", "--out", out, str(images["gray"])],
        "set_syntax": ["--method", "orb", "--set", "max_keypoints", "--out", out, str(images["gray"])],
        "set_key": ["--method", "orb", "--set", "bogus=1", "--out", out, str(images["gray"])],
        "set_value": ["--method", "orb", "--set", "max_keypoints=lots", "--out", out, str(images["gray"])],
        "empty_dir": ["--method", "orb", "--out", out, str(empty)],
        "weights": ["--method", "superpoint", "--weights", str(bad), "--out", out, str(images["gray"])],
        "out_is_file": ["--method", "orb", "--out", str(bad), str(images["gray"])],
    }[case]
    expect = {"missing": "not found", "unreadable": "cannot read", "method": "unknown method",
              "set_syntax": "KEY=VALUE", "set_key": "bogus", "set_value": "max_keypoints",
              "empty_dir": "no images", "weights": "cannot read checkpoint",
              "out_is_file": "cannot create output folder"}[case]
    rc = cli_main(["extract", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and expect in err[0], err
    assert not list(Path(out).glob("*.npz")) if Path(out).exists() else True


def test_console_entry_point_exit_status(images, tmp_path):
    """The real process: status 0 and files on success, status != 0 and one line on error."""
    out = tmp_path / "o"
    ok = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "extract", "--method", "sift",
                         "--set", "root_sift=true", "--out", str(out), str(images["gray"])],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    f = _load(out / "gray.npz")
    assert f["descriptors"].shape[1] == 128 and len(f["keypoints"]) > 5
    bad = subprocess.run([sys.executable, "-m", "local_features_ros.cli", "extract", "--method", "sift",
                          "--out", str(out), str(tmp_path / "missing.jpg")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not found" in lines[0]


def test_skip_bad_writes_the_good_images_and_lists_the_bad(images, tmp_path, capsys):
    folder = images["dir"]
    (folder / "text.png").write_bytes(b"this is not a png")  # fails the header check
    (folder / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # header ok, body corrupt
    out = tmp_path / "o"
    assert cli_main(["extract", "--method", "orb", "--out", str(out), str(folder)]) != 0  # strict
    rc = cli_main(["extract", "--method", "orb", "--skip-bad", "--out", str(out), str(folder)])
    captured = capsys.readouterr()
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["color.npz", "gray.npz"]
    assert "skipped 2 bad image(s)" in captured.err
    assert "text.png" in captured.err and "trunc.png" in captured.err
    assert "wrote 2 feature file(s)" in captured.out
    only_bad = tmp_path / "bad_only"
    only_bad.mkdir()
    (only_bad / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert cli_main(["extract", "--method", "orb", "--skip-bad", "--out", str(tmp_path / "o2"),
                     str(only_bad)]) == 1  # nothing worked: failure
