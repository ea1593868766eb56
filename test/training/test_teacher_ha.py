"""Homographic Adaptation with a teacher: the teacher's score maps go through
MagicPoint's aggregation, the labels sit at the teacher's keypoints and are more repeatable than
one teacher pass, and every teacher runs through a tiny pipeline whose output loads in the
runtime and records the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from local_features_ros_training.config import ConfigError, load_config
from local_features_ros_training.data.homographies import sample_homography, warp_image
from local_features_ros_training.superpoint import pipeline as pl
from local_features_ros_training.superpoint.homographic_adaptation import detect_labels, homographic_adaptation
from local_features_ros_training.superpoint.teachers import Teacher, build_teacher, teacher_kind
from conftest import rectangle_frames

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
HA = {"num": 16, "homographies": {"max_angle": 0.5}}
DET = {"nms": 4, "iou": 0.1, "top_k": 0}


def _checkerboard() -> tuple[np.ndarray, np.ndarray]:
    """96x128 gray checkerboard in [0, 1] and its 15 inner corners (x, y)."""
    img = np.full((96, 128), 0.5, np.float32)
    for i in range(4):
        for j in range(6):
            img[16 + 16 * i:32 + 16 * i, 16 + 16 * j:32 + 16 * j] = 0.1 if (i + j) % 2 else 0.9
    corners = [[16 + 16 * j - 0.5, 16 + 16 * i - 0.5] for i in range(1, 4) for j in range(1, 6)]
    return cv2.GaussianBlur(img, (3, 3), 0), np.array(corners, np.float32)


def _labels(teacher: Teacher, img: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
    """Label points (x, y) of ``img`` with ``num`` views (1 = a single teacher pass)."""
    prob = homographic_adaptation(teacher.prob_fn, img, np.random.default_rng(seed),
                                  {**HA, "num": num}, 8)
    rc, _ = detect_labels(prob, DET, *teacher.thresholds({}))
    return rc[:, ::-1].astype(np.float64)


def _repeatability(p1: np.ndarray, p2: np.ndarray, H: np.ndarray, shape, eps: float = 2.0) -> float:
    """Symmetric share of points (in both views' common area) within ``eps`` px of a point of
    the other view; ``H`` maps view 1 to view 2."""
    def proj(p, M):
        q = np.c_[p, np.ones(len(p))] @ M.T
        return q[:, :2] / q[:, 2:]

    h, w = shape

    def inside(p):
        return (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)

    a, b = proj(p1, H), p2
    a, b = a[inside(a)], b[inside(proj(b, np.linalg.inv(H)))]
    if len(a) == 0 or len(b) == 0:
        return 0.0
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    return float(((d.min(1) <= eps).sum() + (d.min(0) <= eps).sum()) / (len(a) + len(b)))


def _jittery_teacher(corners: np.ndarray) -> Teacher:
    """A stand-in teacher with known keypoints: a peak at each true corner, plus spurious peaks
    that depend on the view (what makes a single pass unrepeatable)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        out = []
        for im in x[:, 0].numpy():
            r = np.clip(cv2.cornerHarris(im.astype(np.float32), 5, 3, 0.04), 0, None)
            r /= max(r.max(), 1e-12)
            rng = np.random.default_rng(int(abs(im).sum() * 1e4) % 2**32)  # per view
            for y, xx in zip(rng.integers(4, im.shape[0] - 4, 12), rng.integers(4, im.shape[1] - 4, 12)):
                r[y - 1:y + 2, xx - 1:xx + 2] = np.maximum(r[y - 1:y + 2, xx - 1:xx + 2], 0.6)
            out.append(r)
        return torch.from_numpy(np.stack(out))

    return Teacher("jittery", "aliked", fn, None, {"min_prob": 0.2, "detection_threshold": 0.2})


def _rectangles() -> tuple[np.ndarray, np.ndarray]:
    """96x128 gray image of two bright rectangles and their 8 corners (x, y)."""
    img = np.full((96, 128), 0.2, np.float32)
    corners = []
    for x0, y0, x1, y1 in ((20, 20, 60, 50), (75, 40, 110, 80)):
        cv2.rectangle(img, (x0, y0), (x1, y1), 0.8, -1)
        corners += [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return cv2.GaussianBlur(img, (5, 5), 0), np.array(corners, np.float32)


def test_teacher_labels_are_at_its_keypoints_and_more_repeatable_than_one_pass():
    img, corners = _rectangles()
    teacher = _jittery_teacher(corners)
    pts = _labels(teacher, img, 16)
    d = np.linalg.norm(pts[:, None] - corners[None], axis=2)
    assert (d.min(axis=0) <= 2.5).mean() >= 0.9  # the teacher's (true) keypoints are labelled
    assert (d.min(axis=1) <= 3.0).mean() >= 0.8  # and its view-dependent ones averaged away
    single = _labels(teacher, img, 1)
    assert (np.linalg.norm(single[:, None] - corners[None], axis=2).min(1) <= 3.0).mean() < 0.7
    # two warps of the image: HA labels repeat across them far better than single passes
    rng = np.random.default_rng(3)
    Hs = [sample_homography(img.shape, rng, max_angle=0.3, patch_ratio=0.9).H for _ in range(2)]
    views = [warp_image(img, H) for H in Hs]
    H12 = Hs[1] @ np.linalg.inv(Hs[0])
    rep_ha = _repeatability(*(_labels(teacher, v, 16, s) for s, v in enumerate(views)), H12, img.shape)
    rep_one = _repeatability(*(_labels(teacher, v, 1, s) for s, v in enumerate(views)), H12, img.shape)
    assert rep_ha > rep_one + 0.2, (rep_ha, rep_one)


@pytest.mark.parametrize("name", ["aliked-n16", "disk"])
def test_released_teachers_label_near_their_own_keypoints(name):
    """The real teachers: score maps in [0, 1]; HA labels (16 views) fall on keypoints the
    runtime extractor itself detects on the image."""
    from local_features_ros.registry import build_extractor

    img, _ = _checkerboard()
    teacher = build_teacher(name, None, "cpu")
    p = teacher.prob_fn(torch.from_numpy(img)[None, None])
    assert p.shape == (1, 96, 128) and float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    pts = _labels(teacher, img, 16)
    assert len(pts) >= 5
    ex = build_extractor("disk") if name == "disk" else build_extractor("aliked", model=name)
    kp = np.asarray(ex.extract(np.stack([(img * 255).astype(np.uint8)] * 3, -1)).keypoints)
    near = np.linalg.norm(pts[:, None] - kp[None], axis=2).min(axis=1) <= 3.0
    assert near.mean() >= 0.4, near.mean()
    assert teacher.record()["name"] == name and Path(teacher.record()["weights"]).is_file()


@pytest.mark.parametrize("teacher", ["aliked-n16", "disk", "path"])
def test_each_teacher_runs_a_tiny_pipeline_and_is_recorded(tmp_path, teacher):
    from local_features_ros.registry import build_extractor
    from local_features_ros.weights import save_checkpoint
    from local_features_ros_training.superpoint.model import SuperPointModel

    if teacher == "path":
        torch.manual_seed(0)
        teacher = str(tmp_path / "sp_teacher.pth")
        save_checkpoint(teacher, "superpoint", SuperPointModel().runtime_state_dict(), {})
    frames = rectangle_frames(tmp_path / "frames", 3, 64, 64, rects=5, max_xy=50, max_size=20)
    conf = load_config(CONFIGS / "superpoint_pipeline_tiny.yaml", [
        f"export.teacher={teacher}", f"export.set.data.image_dirs=[{frames}]",
        "export.set.homography_adaptation.num=3", "joint.set.train.max_steps=2"])
    if teacher.endswith(".pth"):  # a random SuperPoint is under-confident: label its top points
        conf["export"]["set"]["detection"] = {"min_prob": 0.0, "detection_threshold": 0.0,
                                              "top_k": 20}
    rep = pl.run_pipeline(conf, tmp_path / "run")
    assert [s["stage"] for s in rep["stages"]] == ["ha1", "joint1"]  # MagicPoint skipped
    assert rep["teacher"] == teacher
    meta = json.loads((tmp_path / "run" / "ha1" / "labels" / "teacher.json").read_text())
    assert meta["name"] == teacher and meta["kind"] == teacher_kind(teacher)
    lab = next((tmp_path / "run" / "ha1" / "labels").glob("*.npz"))
    assert str(np.load(lab)["teacher"]) == teacher and len(np.load(lab)["points"]) > 0
    ckpt = torch.load(tmp_path / "run" / "superpoint.pth", weights_only=True)
    assert ckpt["teacher"]["name"] == teacher
    assert ckpt["config"]["model"]["teacher"]["name"] == teacher
    ex = build_extractor("superpoint", weights=str(tmp_path / "run" / "superpoint.pth"))
    assert torch.equal(ex.convDb.weight.detach(), ckpt["state_dict"]["convDb.weight"])


def test_teacher_config_defaults_and_errors(tmp_path, monkeypatch):
    conf = load_config(CONFIGS / "superpoint_pipeline.yaml")
    assert conf["export"]["teacher"] == "magicpoint"  # the paper's recipe stays the default
    assert load_config(CONFIGS / "superpoint_homographic_adaptation.yaml")["teacher"] == "magicpoint"
    pipe = {**pl.DEFAULT_PIPELINE, **conf["pipeline"]}
    assert [p[0] for p in pl._plan(pipe, "magicpoint")] == ["magicpoint", "ha1", "joint1"]
    assert [p[0] for p in pl._plan(pipe, "disk")] == ["ha1", "joint1"]
    with pytest.raises(ConfigError, match="teacher"):
        pl.run_pipeline(load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                                    ["export.teacher=no_such_teacher"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="export.teacher only"):
        pl.run_pipeline(load_config(CONFIGS / "superpoint_pipeline_tiny.yaml",
                                    ["export.teacher=disk", "export.set.teacher=aliked-n16"]),
                        tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="temperature"):
        build_teacher("disk", None, "cpu", {"temperature": 0})
    with pytest.raises(ValueError, match="not a setting"):
        build_teacher("aliked-n16", None, "cpu", {"temperature": 2})
    assert Teacher("m", "superpoint", lambda x: x, None,
                   {"min_prob": None, "detection_threshold": None}).thresholds(
        {"min_prob": 0.015, "detection_threshold": 0.02}) == (0.015, 0.02)
