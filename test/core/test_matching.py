"""Descriptor matching: hand-built descriptors with known NN / mutual / ratio / distance outcomes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from local_features_ros.matching import MatcherConfig, match_descriptors, nearest_neighbours

# desc1 ("B") and desc0 ("A") in 2-D; outcomes worked out by hand:
#   A0 (0.5, 0):  NN B0 (0.5), 2nd B1 (9.5)            ratio 0.05
#   A1 (10, 0.4): NN B1 (0.4), 2nd B2 (0.6)            ratio 0.667
#   A2 (0, 3):    NN B0 (3.0), 2nd B1 (sqrt(109))      ratio 0.287; B0 prefers A0 -> not mutual
#   A3 (0, 14):   NN B3 (6.0), 2nd B0 (14)             ratio 0.429; mutual
#   B2's nearest A is A1, whose nearest B is B1 -> B2 is never mutual.
#   Reverse ratios: B0: A0 0.5 / A2 3 = 0.167, B3: A3 6 / A2 17 = 0.353.
A = torch.tensor([[0.5, 0.0], [10.0, 0.4], [0.0, 3.0], [0.0, 14.0]])
B = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [0.0, 20.0]])


def _pairs(res) -> set[tuple[int, int]]:
    return {tuple(int(v) for v in m) for m in res.matches}


def test_nearest_neighbour():
    res = match_descriptors(A, B, MatcherConfig(mutual=False))
    assert _pairs(res) == {(0, 0), (1, 1), (2, 0), (3, 3)}
    np.testing.assert_allclose(res.distances, [0.5, 0.4, 3.0, 6.0], rtol=1e-6)
    assert res.matches.dtype == np.int64 and res.distances.dtype == np.float32
    assert res.inliers.all() and res.model_type == "none"


def test_mutual_nearest_neighbour():
    res = match_descriptors(A, B, MatcherConfig(mutual=True))
    assert _pairs(res) == {(0, 0), (1, 1), (3, 3)}
    # Swapping the sides swaps the pairs (mutual NN is symmetric).
    rev = match_descriptors(B, A, MatcherConfig(mutual=True))
    assert _pairs(rev) == {(0, 0), (1, 1), (3, 3)}


def test_ratio_test_one_way_and_mutual():
    snn = match_descriptors(A, B, MatcherConfig(mutual=False, ratio=0.6))
    assert _pairs(snn) == {(0, 0), (2, 0), (3, 3)}
    np.testing.assert_allclose(snn.distances, [0.5, 3.0, 6.0], rtol=1e-6)  # distances, not ratios
    smnn = match_descriptors(A, B, MatcherConfig(mutual=True, ratio=0.6))
    assert _pairs(smnn) == {(0, 0), (3, 3)}
    loose = match_descriptors(A, B, MatcherConfig(mutual=False, ratio=0.7))
    assert (1, 1) in _pairs(loose)  # A1's ratio 0.667 passes at 0.7


def test_max_distance():
    res = match_descriptors(A, B, MatcherConfig(mutual=True, max_distance=1.0))
    assert _pairs(res) == {(0, 0), (1, 1)}
    assert match_descriptors(A, B, MatcherConfig(mutual=True, max_distance=0.1)).matches.shape == (0, 2)


def test_empty_inputs_and_validation():
    for d0, d1 in [(torch.zeros(0, 8), torch.rand(5, 8)), (torch.rand(5, 8), torch.zeros(0, 8)),
                   (torch.zeros(0, 8), torch.zeros(0, 8))]:
        res = match_descriptors(d0, d1)
        assert res.matches.shape == (0, 2) and res.distances.shape == (0,) and len(res) == 0
    # A ratio test needs a second neighbour.
    assert len(match_descriptors(torch.rand(3, 4), torch.rand(1, 4), MatcherConfig(ratio=0.9))) == 0
    with pytest.raises(ValueError):
        match_descriptors(torch.rand(3, 4), torch.rand(3, 5))
    with pytest.raises(ValueError):
        MatcherConfig(ratio=0.0)
    with pytest.raises(ValueError):
        MatcherConfig(max_distance=-1.0)


def test_half_precision_and_numpy_inputs():
    rng = np.random.default_rng(0)
    d1 = rng.normal(size=(50, 32)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    perm = rng.permutation(50)
    d0 = d1[perm] + rng.normal(scale=0.02, size=(50, 32)).astype(np.float32)
    truth = {(i, int(p)) for i, p in enumerate(perm)}
    for desc0, desc1 in [(torch.from_numpy(d0).half(), torch.from_numpy(d1).half()),
                         (torch.from_numpy(d0).bfloat16(), torch.from_numpy(d1).bfloat16()),
                         (d0, d1)]:
        res = match_descriptors(desc0, desc1)
        assert _pairs(res) == truth
        assert res.distances.dtype == np.float32 and np.all(res.distances < 0.3)


def test_orb_bits_distance_is_sqrt_hamming():
    rng = np.random.default_rng(1)
    bits1 = rng.integers(0, 2, (20, 256)).astype(np.float32)
    bits0 = bits1.copy()
    flips = np.arange(20) % 7 + 1  # flip 1..7 bits of each
    for i, k in enumerate(flips):
        idx = rng.choice(256, k, replace=False)
        bits0[i, idx] = 1 - bits1[i, idx]
    res = match_descriptors(torch.from_numpy(bits0), torch.from_numpy(bits1))
    assert _pairs(res) == {(i, i) for i in range(20)}
    np.testing.assert_allclose(res.distances ** 2, flips.astype(np.float32), rtol=1e-5)


def _brute_force_pairs(d0: torch.Tensor, d1: torch.Tensor, mutual: bool) -> set[tuple[int, int]]:
    """Nearest neighbours from exact pairwise L2 distances in float64 (the definition)."""
    dist = torch.cdist(d0.double(), d1.double(), compute_mode="donot_use_mm_for_euclid_dist")
    fwd, bwd = dist.argmin(1), dist.argmin(0)
    return {(i, int(j)) for i, j in enumerate(fwd) if not mutual or int(bwd[j]) == i}


@pytest.mark.parametrize("kind", ["unit", "raw", "bits"])
@pytest.mark.parametrize("mutual", [True, False])
def test_nearest_neighbours_agree_with_kornia_and_the_definition(kind, mutual):
    """The one-product nearest-neighbour search gives kornia's match_mnn / match_nn pairs (the
    distance-matrix implementation) and the exact float64 nearest neighbours, for unit, unnormalised
    and 0/1 (ORB, many exact ties) descriptors, square and not."""
    from kornia.feature import match_mnn, match_nn

    g = torch.Generator().manual_seed(7)
    for n0, n1 in ((1, 1), (1, 9), (9, 1), (300, 500), (700, 650)):
        if kind == "bits":
            d0 = (torch.rand(n0, 256, generator=g) > 0.5).float()
            d1 = (torch.rand(n1, 256, generator=g) > 0.5).float()
        else:
            d0, d1 = torch.randn(n0, 64, generator=g), torch.randn(n1, 64, generator=g)
            if kind == "unit":
                d0, d1 = (torch.nn.functional.normalize(d, dim=1) for d in (d0, d1))
            else:
                d0, d1 = d0 * torch.rand(n0, 1, generator=g) * 5, d1 * 3
        res = match_descriptors(d0, d1, MatcherConfig(mutual=mutual))
        _, idx = (match_mnn if mutual else match_nn)(d0, d1, dm=torch.cdist(d0, d1))
        assert _pairs(res) == {tuple(int(v) for v in m) for m in idx}
        if kind != "bits":  # exact ties: the definition leaves the choice open
            assert _pairs(res) == _brute_force_pairs(d0, d1, mutual)
        assert np.all(np.diff(res.matches[:, 0]) > 0)  # sorted by i0, each once
        exact = torch.linalg.vector_norm(d0[res.matches[:, 0]] - d1[res.matches[:, 1]], dim=1)
        np.testing.assert_allclose(res.distances, exact.numpy(), rtol=1e-6)


def test_nearest_neighbours_first_of_exact_ties():
    d1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    d0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert nearest_neighbours(d0, d1).tolist() == [0, 0]


def test_every_device_and_dtype(device, dtype):
    """Descriptors on any device, in any float type (reduced-precision extractors), and mixed."""
    res = match_descriptors(A.to(device, dtype), B.to(device, dtype))
    assert _pairs(res) == {(0, 0), (1, 1), (3, 3)}
    assert _pairs(match_descriptors(A.to(device), B.to(device, dtype))) == _pairs(res)


# ----------------------------------------------------------------------------- `local-features match`
def _write_pair(tmp_path):
    import cv2

    from local_features_ros.synthetic.scene import PinholeCamera, SyntheticScene

    scene = SyntheticScene(seed=2, camera=PinholeCamera.default(240, 180))
    f0, f1 = scene.frames(2, "orbit", step_deg=4.0)
    paths = []
    for k, f in enumerate((f0, f1)):
        p = tmp_path / f"img{k}.png"
        cv2.imwrite(str(p), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    return (f0, f1), paths


def test_match_command_orb(tmp_path, capsys):
    from local_features_ros.cli import main
    from local_features_ros.synthetic.scene import relative_pose, warp_points_with_depth

    (f0, f1), (p0, p1) = _write_pair(tmp_path)
    out = tmp_path / "m.npz"
    rc = main(["match", "--method", "orb", "--set", "max_keypoints=500", "--verify", "fundamental",
               "--threshold", "2", p0, p1, "--out", str(out), "--draw", str(tmp_path / "m.png")])
    assert rc == 0 and "inliers (fundamental)" in capsys.readouterr().out
    d = np.load(out)
    k0, k1, m, inl = d["keypoints0"], d["keypoints1"], d["matches"], d["inliers"]
    assert k0.shape[1] == 2 and len(k0) <= 500 and list(d["image_size0"]) == [240, 180]
    assert m.dtype == np.int64 and m[:, 0].max() < len(k0) and m[:, 1].max() < len(k1)
    assert str(d["model_type"]) == "fundamental" and np.isfinite(d["model"]).all()
    assert inl.sum() > 50
    # Independent check: verified matches agree with the ground-truth depth warp.
    w, valid = warp_points_with_depth(k0[m[inl, 0]], f0.depth, f0.K, f1.K,
                                      relative_pose(f0.T_world_cam, f1.T_world_cam))
    err = np.linalg.norm(w[valid] - k1[m[inl, 1]][valid], axis=1)
    assert np.mean(err < 3.0) > 0.9
    import cv2

    assert cv2.imread(str(tmp_path / "m.png")).shape == (180, 480, 3)
    # Plain NN keeps at least as many matches as mutual NN; no verification keeps all.
    out2 = tmp_path / "nn.npz"
    assert main(["match", "--method", "orb", "--set", "max_keypoints=500", "--no-mutual",
                 "--verify", "none", p0, p1, "--out", str(out2)]) == 0
    d2 = np.load(out2)
    assert len(d2["matches"]) >= len(m) and d2["inliers"].all() and str(d2["model_type"]) == "none"
    assert np.isnan(d2["model"]).all()


def test_match_command_errors(tmp_path, capsys):
    from local_features_ros.cli import main

    rc = main(["match", "--method", "orb", str(tmp_path / "missing.png"), str(tmp_path / "x.png"),
               "--out", str(tmp_path / "o.npz")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = main(["match", "--method", "nope", "a.png", "b.png", "--out", str(tmp_path / "o.npz")])
    assert rc != 0
