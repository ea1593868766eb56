"""``local-features evaluate`` / ``bench`` end to end on tiny generated folders (no shared data).

Expectations come from the generating geometry: known homographies for the HPatches-format
folder, rendered poses for the pair list / Strecha / TUM / KITTI folders.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from local_features_ros.cli import main as cli

W, H = 160, 120


def _texture(seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    base = cv2.resize(r.integers(0, 255, (H // 6, W // 6, 3)).astype(np.uint8), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    for _ in range(25):
        x, y = int(r.integers(0, W - 20)), int(r.integers(0, H - 20))
        c = tuple(int(v) for v in r.integers(0, 255, 3))
        if r.random() < 0.5:
            cv2.rectangle(base, (x, y), (x + int(r.integers(5, 20)), y + int(r.integers(5, 20))), c, -1)
        else:
            cv2.circle(base, (x, y), int(r.integers(3, 10)), c, -1)
    return cv2.GaussianBlur(base, (3, 3), 0)


def _homography(deg: float, scale: float, tx: float, ty: float, p: float) -> np.ndarray:
    """Rotation + scale about the image centre, translation, slight perspective."""
    a = math.radians(deg)
    c = np.array([[1, 0, W / 2], [0, 1, H / 2], [0, 0, 1]])
    A = np.array([[scale * math.cos(a), -scale * math.sin(a), tx],
                  [scale * math.sin(a), scale * math.cos(a), ty], [p, 0, 1]])
    return c @ A @ np.linalg.inv(c)


HS = {"2": _homography(6, 0.95, 3, -2, 1e-4), "3": _homography(-8, 1.05, -4, 3, -1e-4)}


def _hpatches_folder(root, h_offset: float = 0.0):
    ref = _texture(1)
    for seq in ("v_synth", "i_synth"):
        d = root / seq
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "1.ppm"), ref[..., ::-1])
        for k, Hk in HS.items():
            if seq.startswith("i_"):
                Hk = np.eye(3)
                img = np.clip(ref.astype(np.float32) * (0.75 if k == "2" else 1.2) + 10, 0, 255)
                img = img.astype(np.uint8)
            else:
                img = cv2.warpPerspective(ref, Hk, (W, H), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT)
            cv2.imwrite(str(d / f"{k}.ppm"), img[..., ::-1])
            T = np.array([[1, 0, h_offset], [0, 1, 0], [0, 0, 1]])
            np.savetxt(d / f"H_1_{k}", T @ Hk)
    return root


def _run(argv: list[str]) -> int:
    return cli(argv)


@pytest.fixture(scope="module")
def frames():
    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    return list(SyntheticScene(3, camera=PinholeCamera.default(W, H)).frames(8, kind="forward"))


# ---------------------------------------------------------------------------------------- hpatches
@pytest.mark.parametrize("method", ["sift", "akaze"])
def test_hpatches_on_known_homographies(tmp_path, method):
    root = _hpatches_folder(tmp_path / "hp")
    out = tmp_path / "r.json"
    assert _run(["evaluate", "hpatches", "--method", method, str(root), "--json", str(out),
                 "--plot", str(tmp_path / "plots")]) == 0
    r = json.loads(out.read_text())
    assert set(r["mma"]) == {str(t) for t in range(1, 11)}
    assert set(r["homography_accuracy"]) == {"1", "3", "5"}
    assert r["num_pairs"] == 4 and set(r["by_type"]) == {"i", "v"}
    assert r["mma"]["5"] > 0.7 and r["mma"]["10"] >= r["mma"]["1"]
    assert r["homography_accuracy"]["5"] >= 0.75
    assert r["repeatability"] > 0.4 and 0 <= r["localization_error"] <= 3
    assert r["features"] > 20 and r["matches"] > 10
    assert (tmp_path / "plots" / f"hpatches_{method}_mma.png").stat().st_size > 1000


def test_hpatches_metrics_use_the_ground_truth(tmp_path):
    """Same images, homographies off by 15 px: matches are now 'wrong' at every small threshold."""
    root = _hpatches_folder(tmp_path / "hp", h_offset=15.0)
    out = tmp_path / "r.json"
    assert _run(["evaluate", "hpatches", "--method", "sift", str(root), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["mma"]["3"] < 0.05
    assert r["homography_accuracy"]["5"] == 0.0


def test_features_are_used_as_configured(tmp_path):
    """``--set max_keypoints`` reaches the extractor and nothing else trims the features."""
    root = _hpatches_folder(tmp_path / "hp")
    out = tmp_path / "r.json"
    assert _run(["evaluate", "hpatches", "--method", "orb", "--set", "max_keypoints=40",
                 str(root), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["conf"]["max_keypoints"] == 40
    assert 20 < r["features"] <= 40


# ---------------------------------------------------------------------------------------- pairs
def _pair_list(root, frames, pairs):
    root.mkdir(parents=True)
    lines = []
    for i, j in pairs:
        for k in (i, j):
            cv2.imwrite(str(root / f"{k:03d}.png"), frames[k].image[..., ::-1])
        T = np.linalg.inv(frames[j].T_world_cam) @ frames[i].T_world_cam
        K = lambda f: " ".join(f"{v:.10g}" for v in f.K.ravel())  # noqa: E731
        lines.append(f"{i:03d}.png {j:03d}.png 0 0 {K(frames[i])} {K(frames[j])} "
                     + " ".join(f"{v:.12g}" for v in T.ravel()))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt"


def test_pairs_list_recovers_rendered_poses(tmp_path, frames):
    pairs = [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
    path = _pair_list(tmp_path / "pl", frames, pairs)
    out = tmp_path / "r.json"
    assert _run(["evaluate", "pairs", "--method", "sift", str(path), "--json", str(out),
                 "--plot", str(tmp_path / "plots")]) == 0
    r = json.loads(out.read_text())
    assert r["input_kind"] == "pairs_list" and r["num_pairs"] == 6
    assert set(r["pose_auc"]) == {"5", "10", "20"}
    assert r["median_rotation_error"] < 1.0 and r["median_translation_error"] < 10.0
    assert r["pose_auc"]["20"] > 0.5
    assert (tmp_path / "plots" / "pairs_sift_auc.png").is_file()


def test_strecha_and_tum_folders_match_the_pair_list(tmp_path, frames):
    """The same views through the Strecha (2x original K) and TUM readers give the same errors."""
    st = tmp_path / "strecha"
    (st / "images").mkdir(parents=True)
    (st / "gt_dense_cameras").mkdir()
    tum = tmp_path / "tum"
    (tum / "rgb").mkdir(parents=True)
    gt_lines = ["# timestamp tx ty tz qx qy qz qw"]
    for k, f in enumerate(frames[:5]):
        cv2.imwrite(str(st / "images" / f"{k:04d}.jpg"), f.image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        K0 = f.K.copy()  # the "original" 2x-resolution camera of the Strecha rule
        K0[0, 0] *= 2
        K0[1, 1] *= 2
        K0[0, 2] = (K0[0, 2] + 0.5) * 2 - 0.5
        K0[1, 2] = (K0[1, 2] + 0.5) * 2 - 0.5
        R, C = f.T_world_cam[:3, :3], f.T_world_cam[:3, 3]
        nums = [*K0.ravel(), 0, 0, 0, *R.ravel(), *C, 2 * W, 2 * H]
        (st / "gt_dense_cameras" / f"{k:04d}.jpg.camera").write_text(
            " ".join(f"{v:.12g}" for v in nums))
        stamp = 1000.0 + 0.1 * k
        cv2.imwrite(str(tum / "rgb" / f"{stamp:.6f}.png"), f.image[..., ::-1])
        q = _quat(R)
        gt_lines.append(f"{stamp:.4f} {C[0]:.9f} {C[1]:.9f} {C[2]:.9f} "
                        + " ".join(f"{v:.12f}" for v in q))
    (tum / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    K = frames[0].K
    intr = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    res = {}
    for name, extra in (("strecha", []), ("tum", ["--intrinsics", intr])):
        out = tmp_path / f"{name}.json"
        assert _run(["evaluate", "pairs", "--method", "sift", str(tmp_path / name), "--json",
                     str(out), "--min-gap", "2", "--max-gap", "2", *extra]) == 0
        res[name] = json.loads(out.read_text())
        assert res[name]["input_kind"] == name and res[name]["num_pairs"] == 3
        assert res[name]["median_rotation_error"] < 1.0
    for a, b in zip(res["strecha"]["per_pair"], res["tum"]["per_pair"]):
        assert abs(a["rotation_error"] - b["rotation_error"]) < 0.5


def _quat(R: np.ndarray) -> list[float]:
    """Rotation matrix -> (qx, qy, qz, qw) via the Rodrigues axis-angle (independent of the reader)."""
    rvec = cv2.Rodrigues(R)[0].ravel()
    angle = np.linalg.norm(rvec)
    axis = rvec / angle if angle > 0 else np.array([1.0, 0, 0])
    return [*(axis * math.sin(angle / 2)), math.cos(angle / 2)]


# ---------------------------------------------------------------------------------------- sequence
def test_sequence_vo_recovers_rendered_trajectory(tmp_path, frames):
    root = tmp_path / "kitti"
    (root / "image_0").mkdir(parents=True)
    rows = []
    for k, f in enumerate(frames):
        cv2.imwrite(str(root / "image_0" / f"{k:06d}.png"), f.gray)
        rows.append(" ".join(f"{v:.12g}" for v in f.T_world_cam[:3].ravel()))
    (root / "poses.txt").write_text("\n".join(rows) + "\n")
    P = np.c_[frames[0].K, np.zeros(3)]
    (root / "calib.txt").write_text("P0: " + " ".join(f"{v:.12e}" for v in P.ravel()) + "\n")
    out = tmp_path / "seq.json"
    assert _run(["evaluate", "sequence", "--method", "sift", str(root), "--json", str(out),
                 "--plot", str(tmp_path / "plots")]) == 0
    r = json.loads(out.read_text())
    assert r["input_kind"] == "kitti" and r["num_frames"] == 8
    assert len(r["rotation_error"]) == 7 and r["failures"] == 0
    assert r["median_rotation_error"] < 1.0 and r["median_translation_error"] < 10.0
    d = r["drift"]
    assert d["trajectory_length_m"] == pytest.approx(
        sum(np.linalg.norm(frames[i + 1].T_world_cam[:3, 3] - frames[i].T_world_cam[:3, 3])
            for i in range(7)), rel=1e-6)
    assert d["ate_rmse_m"] < 0.05 * d["trajectory_length_m"]
    assert np.allclose(r["trajectory"]["ground_truth"][3], frames[3].T_world_cam[:3, 3])
    assert (tmp_path / "plots" / "sequence_sift_traj.png").is_file()


# ---------------------------------------------------------------------------------------- errors, bench
def test_bad_input_fails_with_reason(tmp_path, capsys):
    """Configuration errors: exit status 2 and the reason (test_cli_bad_inputs.py has the rest)."""
    assert _run(["evaluate", "hpatches", "--method", "sift", str(tmp_path / "none"),
                 "--json", str(tmp_path / "r.json")]) == 2
    assert _run(["evaluate", "hpatches", "--method", "nope", str(tmp_path),
                 "--json", str(tmp_path / "r.json")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert _run(["evaluate", "pairs", "--method", "d2net", str(tmp_path),
                 "--json", str(tmp_path / "r.json")]) == 2  # d2net ships no weights: refused
    assert "needs weights" in capsys.readouterr().err


def test_bench_smoke(tmp_path):
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    assert _run(["bench", "--methods", "orb,akaze,superpoint", "--weights", "random", "--sizes",
                 "64x48", "--runs", "2", "--warmup", "1", "--json", str(js),
                 "--markdown", str(md)]) == 0
    recs = {r["method"]: r for r in json.loads(js.read_text())}
    assert set(recs) == {"orb", "akaze", "superpoint"}
    for r in recs.values():
        t = r["timing"]
        assert r["size"] == "64x48" and t["whole"]["runs"] == 2
        assert t["whole"]["p90_ms"] >= t["whole"]["median_ms"] > 0
    assert recs["superpoint"]["timing"]["network"] is not None  # learned: network split
    assert recs["orb"]["timing"]["network"] is None
    assert md.read_text().count("| 64x48 |") == 3


def test_summary_tables_repeat_the_json(tmp_path):
    from local_features_ros.evaluation.plots import summarize

    root = _hpatches_folder(tmp_path / "hp")
    res = tmp_path / "res"
    for m in ("sift", "orb"):
        assert _run(["evaluate", "hpatches", "--method", m, str(root), "--json",
                     str(res / f"synth_{m}.json")]) == 0
    text = summarize(res).read_text()
    assert "## synth (hpatches)" in text
    for m in ("sift", "orb"):
        r = json.loads((res / f"synth_{m}.json").read_text())
        row = next(line for line in text.splitlines() if line.startswith(f"| {m} |"))
        assert row.split("|")[3].strip() == f"{r['mma']['3']:.3f}"
    assert (res / "synth_mma.png").is_file()
