"""Deployment backends: ONNX export (``local-features export``) and ``backend: onnxruntime |
openvino`` giving the torch fp32 outputs; clear errors for methods without a network.

CPU only, generated images; every export goes to ``tmp_path`` (``LFR_CACHE_DIR``).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings

import cv2
import numpy as np
import pytest
import torch

from local_features_ros import cli
from local_features_ros.evaluation.speed import benchmark_image
from local_features_ros.conventions import ConfigError
from local_features_ros.device import cpu_supports_bf16
from local_features_ros.registry import build_extractor


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_onnx = pytest.mark.skipif(not _have("onnx"), reason="onnx not installed")
BACKENDS = [
    pytest.param("onnxruntime", marks=pytest.mark.skipif(not _have("onnxruntime"),
                                                         reason="onnxruntime not installed")),
    pytest.param("openvino", marks=pytest.mark.skipif(not _have("openvino"),
                                                      reason="openvino not installed")),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LFR_CACHE_DIR", str(tmp_path / "cache"))


def agreement(ref: dict, got: dict) -> tuple[float, float]:
    """Fraction of reference keypoints with a keypoint within 0.05 px (exact distances, not
    cdist's matmul form, which is off by ~0.1 px at 640 px), and the minimum descriptor cosine
    of those pairs."""
    a = torch.from_numpy(ref["keypoints"]).double()
    b = torch.from_numpy(got["keypoints"]).double()
    assert len(a) > 100 and len(b) > 0
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    near = d.values <= 0.05
    da = torch.from_numpy(ref["descriptors"]).double()[near]
    db = torch.from_numpy(got["descriptors"]).double()[d.indices[near]]
    cos = torch.nn.functional.cosine_similarity(da, db, dim=1)
    return float(near.double().mean()), float(cos.min()) if len(cos) else 0.0


def _extract(tmp_path, method: str, settings: list[str], name: str, weights: str | None = None
             ) -> dict:
    img = tmp_path / "frame.png"
    if not img.exists():
        cv2.imwrite(str(img), cv2.cvtColor(benchmark_image(640, 480, seed=3), cv2.COLOR_RGB2BGR))
    out = tmp_path / name
    argv = ["extract", "--method", method, "--out", str(out), str(img)]
    if weights:
        argv += ["--weights", weights]
    for s in settings:
        argv += ["--set", s]
    assert cli.main(argv) == 0
    return dict(np.load(out / "frame.npz"))


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
def test_superpoint_backend_gives_torch_fp32_output(tmp_path, backend):
    ref = _extract(tmp_path, "superpoint", [], "torch")
    got = _extract(tmp_path, "superpoint", [f"backend={backend}"], backend)
    within, cos = agreement(ref, got)
    assert within >= 0.99, within
    assert cos >= 0.999, cos
    assert abs(len(got["keypoints"]) - len(ref["keypoints"])) <= 0.01 * len(ref["keypoints"])
    assert any((tmp_path / "cache").glob("superpoint-network-*-opset17.onnx"))


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    """The torch fp32 ``extract`` output of the 640x480 frame per (method, settings), made once
    per module (both backends compare with it)."""
    done: dict[tuple[str, tuple[str, ...]], dict] = {}

    def get(method: str, settings: tuple[str, ...]) -> dict:
        key = (method, settings)
        if key not in done:
            done[key] = _extract(tmp_path_factory.mktemp("torch"), method, list(settings), "torch")
        return done[key]

    return get


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method, settings, part", [
    ("aliked", (), "dense"),
    ("aliked", ("model=aliked-t16",), "dense"),
    ("disk", (), "unet"),
])
def test_aliked_disk_backend_gives_torch_fp32_output(tmp_path, torch_reference, backend, method,
                                                     settings, part):
    """ALIKED (dense network exported, SDDH in torch) and DISK (U-Net exported, padding outside)
    through the backend at 640x480: the torch fp32 keypoints and descriptors (measured: 100 %
    within 0.05 px, equal counts, min cosine >= 0.99999 for aliked-n16/t16 and disk)."""
    ref = torch_reference(method, settings)
    got = _extract(tmp_path, method, [*settings, f"backend={backend}"], backend)
    within, cos = agreement(ref, got)
    assert within >= 0.99, within
    assert cos >= 0.999, cos
    assert abs(len(got["keypoints"]) - len(ref["keypoints"])) <= 0.01 * len(ref["keypoints"])
    assert len(list((tmp_path / "cache").glob(f"{method}-{part}-*-opset17.onnx"))) == 1


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
def test_aliked_dense_export_is_exact_at_any_size(backend):
    """One dynamic export (traced at 64x80, landscape) serves portrait sizes and sizes that are
    no multiple of 32 (kornia's replicate padding is traced, not frozen): same maps as torch."""
    torch.manual_seed(0)
    ref = build_extractor("aliked", "random", model="aliked-t16")
    torch.manual_seed(0)
    ex = build_extractor("aliked", "random", model="aliked-t16", backend=backend)
    assert ex.backend == backend and set(ex._network_runners) == {"dense"}
    for h, w in ((150, 100), (96, 136)):
        x = torch.rand(1, 3, h, w)
        with torch.inference_mode():
            a = ref.call_network("dense", x)
            b = ex.call_network("dense", x)
        for p, q in zip(a, b):
            assert p.shape == q.shape
            assert torch.allclose(p, q, atol=1e-4 * float(p.abs().max()) + 1e-6)


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
def test_aliked_backend_feature_map_is_channels_last(backend):
    """The backend hands SDDH a channels-last feature map (the export's NHWC output viewed as
    NCHW): no per-frame transpose of the full-resolution map, the same values as torch."""
    torch.manual_seed(0)
    ref = build_extractor("aliked", "random", model="aliked-t16")
    torch.manual_seed(0)
    ex = build_extractor("aliked", "random", model="aliked-t16", backend=backend)
    x = torch.rand(1, 3, 72, 96)
    with torch.inference_mode():
        fa, sa = ref.dense(x)
        fb, sb = ex.dense(x)
    assert fb.shape == fa.shape == (1, 64, 72, 96) and sb.shape == sa.shape
    assert fb.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fa, fb, atol=1e-4)


def test_export_cache_key_follows_the_network_declaration():
    """A changed declaration (here: output layout) is a new graph, so a stale cached export
    of the old declaration is never reused."""
    import dataclasses

    from local_features_ros.backends.onnx_export import export_key

    ex = build_extractor("aliked", "random", model="aliked-t16")
    before = export_key(ex, "dense")
    decl = ex.networks["dense"]
    ex.networks = {"dense": dataclasses.replace(decl, outputs=(("feature_map", {}),) + decl.outputs[1:])}
    assert export_key(ex, "dense") != before


@pytest.mark.skipif(not _have("onnxruntime"), reason="onnxruntime not installed")
def test_onnxruntime_session_does_not_spin(tmp_path):
    """ORT threads must not busy-wait after a run: torch post-processing follows on the same
    cores (measured: ALIKED's torch part 84 -> 56 ms with spinning off)."""
    from local_features_ros.backends.onnxruntime_backend import OnnxRuntimeRunner

    ex = build_extractor("superpoint", "random", backend="onnxruntime")
    runner = ex._network_runners["network"]
    assert isinstance(runner, OnnxRuntimeRunner)
    opts = runner.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@needs_onnx
@pytest.mark.skipif(not _have("onnxruntime"), reason="onnxruntime not installed")
@pytest.mark.parametrize("mask", [False, True])
def test_traceable_deform_conv_equals_kornia_and_exports_portrait(tmp_path, mask):
    """The root cause of the wrong ALIKED export: kornia's DeformableConv2d clamps offsets to
    ``max(h, w) / 4`` with Python's ``max``, which tracing freezes to the example's longer side.
    Our re-statement equals kornia's module bit for bit in eager, and its export (traced on a
    landscape example) is right on a portrait input where the clamp binds; kornia's is not."""
    import onnxruntime as ort
    from kornia.feature.aliked.aliked import DeformableConv2d

    from local_features_ros.extractors.aliked import TraceableDeformConv2d, make_traceable

    torch.manual_seed(0)
    kornia_conv = DeformableConv2d(8, 8, mask=mask).eval()
    ours = TraceableDeformConv2d(copy.deepcopy(kornia_conv)).eval()
    assert ours.state_dict().keys() == kornia_conv.state_dict().keys()
    x = torch.randn(1, 8, 40, 24) * 30  # portrait; most offsets beyond 24 / 4
    with torch.no_grad():
        assert float((kornia_conv.offset_conv(x).abs() > 6.0).float().mean()) > 0.3
        want = kornia_conv(x)
        assert torch.equal(ours(x), want)
    errors = {}
    for name, module in (("kornia", kornia_conv), ("ours", ours)):
        path = tmp_path / f"{name}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.rand(1, 8, 8, 10),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {2: "h", 3: "w"}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy()})[0]
        errors[name] = float(np.abs(got - want.numpy()).max() / want.abs().max())
    assert errors["ours"] < 1e-4 and errors["kornia"] > 0.1, errors
    ex = build_extractor("aliked", "random")
    assert not any(isinstance(m, DeformableConv2d) for m in ex.modules())
    assert make_traceable(ex.net) == 0


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
def test_d2net_backend_network_equals_torch(backend):
    """D2-Net's dense network (random weights, fixed seed) through the backend at two sizes:
    the export has dynamic height/width."""
    torch.manual_seed(0)
    ref = build_extractor("d2net", "random")
    torch.manual_seed(0)
    ex = build_extractor("d2net", "random", backend=backend)
    assert ex.backend == backend
    for h, w in ((64, 96), (120, 160)):
        x = torch.rand(1, 3, h, w)
        with torch.inference_mode():
            a = ref.call_network("dense", x)[0]
            b = ex.call_network("dense", x)[0]
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()) + 1e-6)


@needs_onnx
def test_export_cli_onnx_is_checked_and_dynamic(tmp_path, capsys):
    import onnx

    out = tmp_path / "sp.onnx"
    assert cli.main(["export", "--method", "superpoint", "--format", "onnx", "--out", str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}.get("", None) == 17
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]
    assert [o.name for o in model.graph.output] == ["semi", "desc"]


def test_export_cli_torchscript_matches_torch(tmp_path):
    out = tmp_path / "sp.pt"
    assert cli.main(["export", "--method", "superpoint", "--format", "torchscript",
                     "--out", str(out)]) == 0
    ts = torch.jit.load(str(out))
    sp = build_extractor("superpoint")
    x = torch.rand(1, 1, 96, 128)
    with torch.inference_mode():
        a, b = sp(x), ts(x)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, atol=1e-5)


def test_export_refuses_methods_without_network(tmp_path, capsys):
    assert cli.main(["export", "--method", "orb", "--out", str(tmp_path / "orb.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no exportable network" in err and "superpoint" in err
    assert not (tmp_path / "orb.onnx").exists()


def test_backend_key_is_validated_and_restart_only():
    with pytest.raises(ConfigError, match="backend must be one of"):
        build_extractor("superpoint", backend="tflite")
    with pytest.raises(ConfigError, match="no exportable network"):
        build_extractor("orb", backend="onnxruntime")
    sp = build_extractor("superpoint")
    assert sp.conf["backend"] == "torch" and sp.backend == "torch"
    with pytest.raises(ConfigError, match="restart"):
        sp.update_conf(backend="openvino")


def test_tensorrt_without_gpu_says_what_is_missing():
    from local_features_ros.backends import BackendUnavailable

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the error path is not reachable")
    with pytest.raises((BackendUnavailable, ImportError), match="tensorrt|TensorRT|onnxruntime"):
        build_extractor("superpoint", backend="tensorrt", device="cpu")


def test_precision_mapping():
    from local_features_ros.backends import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("onnxruntime", "bf16", cpu) == "fp32"
    assert resolve_precision("openvino", "fp32", cpu) == "fp32"
    native = "bf16" if cpu_supports_bf16() else "fp32"
    assert resolve_precision("openvino", "auto", cpu) == native
    assert resolve_precision("openvino", "fp16", cpu) == native
    assert resolve_precision("tensorrt", "auto", cpu) == "fp16"
    assert resolve_precision("tensorrt", "fp32", cpu) == "fp32"


def test_backend_is_a_node_parameter():
    pytest.importorskip("rcl_interfaces")
    from local_features_ros.registry import get_extractor_class
    from local_features_ros.ros import params as P

    cls = get_extractor_class("superpoint")
    specs = {s.name: s for s in P.shared_extractor_specs(cls.full_default_conf(), cls.runtime_keys)}
    spec = specs["backend"]
    assert spec.default == "torch" and not spec.runtime and spec.target == "extractor:backend"
    assert set(spec.choices) == {"torch", "onnxruntime", "openvino", "tensorrt"}


@needs_onnx
@pytest.mark.skipif(not _have("onnxruntime"), reason="onnxruntime not installed")
@pytest.mark.parametrize("method", ["lfnet", "lift"])
def test_patch_network_methods_through_onnxruntime(method):
    """LF-Net (per-shape detector export + dynamic-count patch descriptor) and LIFT (dynamic
    detector on every pyramid level, orientation and descriptor nets): same features as torch."""
    img = benchmark_image(160, 120, seed=1)
    torch.manual_seed(0)
    ref = build_extractor(method, "random", max_keypoints=200).extract(img).numpy()
    torch.manual_seed(0)
    ex = build_extractor(method, "random", max_keypoints=200, backend="onnxruntime")
    assert ex.backend == "onnxruntime" and set(ex._network_runners) == set(ex.networks)
    got = ex.extract(img).numpy()
    within, cos = agreement(ref, got)
    assert within >= 0.99 and cos >= 0.999, (within, cos)


# ---------------------------------------------------------------------------------------- LightGlue
needs_ort = pytest.mark.skipif(not (_have("onnx") and _have("onnxruntime")),
                               reason="onnx/onnxruntime not installed")


@pytest.fixture(scope="module")
def aliked_pair():
    """ALIKED-n16 features (released weights) of a generated 320x240 image and a copy rotated by
    20 degrees (about the centre, scaled 0.9), a few hundred keypoints each."""
    img0 = benchmark_image(320, 240, seed=5)
    rot = cv2.getRotationMatrix2D((160.0, 120.0), 20.0, 0.9)
    img1 = cv2.warpAffine(img0, rot, (320, 240), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    ex = build_extractor("aliked", max_keypoints=400)
    return ex.extract(img0), ex.extract(img1)


def _same_matches(ref, got) -> tuple[float, float, int]:
    """(Jaccard overlap of the (i0, i1) sets, max |score difference| on the common ones, count)."""
    a = {tuple(m): 1.0 - float(d) for m, d in zip(ref.matches.tolist(), ref.distances)}
    b = {tuple(m): 1.0 - float(d) for m, d in zip(got.matches.tolist(), got.distances)}
    common = a.keys() & b.keys()
    overlap = len(common) / max(1, len(a.keys() | b.keys()))
    diff = max((abs(a[k] - b[k]) for k in common), default=0.0)
    return overlap, diff, len(a)


def _subset(f, n: int):
    return f.select(torch.arange(n))


@needs_ort
def test_lightglue_export_cli_onnxruntime_equals_torch(tmp_path, capsys, aliked_pair):
    """`export --matcher lightglue --method aliked`: a checked opset-17 file whose keypoint
    counts are dynamic; onnxruntime on it gives torch's matches (adaptive depth/width off) at two
    different pairs of keypoint counts."""
    import onnx
    import onnxruntime as ort

    from local_features_ros.backends.lightglue_export import INPUTS, OUTPUTS
    from local_features_ros.matchers import build_matcher

    out = tmp_path / "lightglue_aliked.onnx"
    assert cli.main(["export", "--matcher", "lightglue", "--method", "aliked", "--format", "onnx",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "opset 17" in text and "adaptive depth/width off" in text
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims["keypoints0"] == ["batch", "keypoints0", 2]
    assert dims["descriptors1"] == ["batch", "keypoints1", 128]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    torch_lg = build_matcher("lightglue", features="aliked", depth_confidence=-1,
                             width_confidence=-1)
    th = torch_lg.conf.filter_threshold
    f0, f1 = aliked_pair
    assert len(f0) >= 300 and len(f1) >= 300
    for n0, n1 in ((len(f0), len(f1)), (250, 180)):
        a, b = _subset(f0, n0), _subset(f1, n1)
        ref = torch_lg.match(a, b)
        feed = {"keypoints0": a.keypoints[None].numpy(), "keypoints1": b.keypoints[None].numpy(),
                "descriptors0": a.descriptors[None].numpy(),
                "descriptors1": b.descriptors[None].numpy(),
                "image_size0": np.array([a.image_size], np.float32),
                "image_size1": np.array([b.image_size], np.float32)}
        m0, s0 = session.run(list(OUTPUTS), feed)
        assert m0.shape == s0.shape == (1, n0) and m0.dtype == np.int64
        keep = (m0[0] >= 0) & (s0[0] > th)
        from local_features_ros.types import MatchResult

        got = MatchResult(matches=np.stack([np.flatnonzero(keep), m0[0][keep]], -1),
                          distances=(1 - s0[0][keep]).astype(np.float32),
                          inliers=np.ones(int(keep.sum()), bool))
        overlap, diff, count = _same_matches(ref, got)
        # measured (CPU): every match equal (250 at 400/400, 114 at 250/180), max score
        # difference 2.9e-5 / 5.4e-6
        assert count > 50, count
        assert overlap >= 0.99 and diff <= 1e-3, (n0, n1, overlap, diff)


def test_lightglue_export_torchscript_and_refusals(tmp_path, capsys, aliked_pair):
    from local_features_ros.matchers import build_matcher

    out = tmp_path / "lg.pt"
    assert cli.main(["export", "--matcher", "lightglue", "--method", "disk", "--format",
                     "torchscript", "--matcher-set", "n_layers=3", "--out", str(out)]) == 0
    ts = torch.jit.load(str(out))
    ref = build_matcher("lightglue", features="disk", n_layers=3, depth_confidence=-1,
                        width_confidence=-1)
    f0, f1 = aliked_pair  # 128-D like DISK's: checks the graph, not the features
    for n0, n1 in ((300, 260), (120, 200)):
        a, b = _subset(f0, n0), _subset(f1, n1)
        size = torch.tensor([a.image_size], dtype=torch.float32)
        with torch.inference_mode():
            m0, s0 = ts(a.keypoints[None], b.keypoints[None], a.descriptors[None],
                        b.descriptors[None], size, size)
        keep = (m0[0] >= 0) & (s0[0] > ref.conf.filter_threshold)
        got = {(int(i), int(j)) for i, j in zip(torch.nonzero(keep)[:, 0], m0[0][keep])}
        want = {tuple(m) for m in ref.match(a, b).matches.tolist()}
        assert m0.shape == (1, n0) and got == want
    capsys.readouterr()
    assert cli.main(["export", "--matcher", "lightglue", "--method", "aliked", "--shape",
                     "1x2", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--shape apply to extractor exports" in capsys.readouterr().err
    assert cli.main(["export", "--matcher", "lightglue", "--method", "superpoint",
                     "--out", str(tmp_path / "x.onnx")]) == 2
    assert "needs weights for method 'superpoint'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
@pytest.mark.parametrize("backend", BACKENDS)
def test_lightglue_matcher_backend(tmp_path, aliked_pair, backend):
    """``backend: onnxruntime | openvino`` on the matcher: exported once to the cache, same
    matches as the torch matcher with adaptive depth/width off (measured: all matches equal,
    scores within 5e-5); the key is validated and restart-only."""
    from local_features_ros.matchers import build_matcher

    f0, f1 = aliked_pair
    ref = build_matcher("lightglue", features="aliked", depth_confidence=-1, width_confidence=-1)
    lg = build_matcher("lightglue", features="aliked", backend=backend)
    assert lg.backend == backend and ref.backend == "torch"
    assert "adaptive depth/width off" in lg.describe()
    assert len(list((tmp_path / "cache").glob("lightglue-*-opset17.onnx"))) == 1
    for n0, n1 in ((len(f0), len(f1)), (200, 260)):
        a, b = _subset(f0, n0), _subset(f1, n1)
        got = lg.match(a, b)
        assert got.matches.dtype == np.int64 and got.distances.dtype == np.float32
        assert np.all(np.diff(got.matches[:, 0]) > 0)
        overlap, diff, count = _same_matches(ref.match(a, b), got)
        assert count > 50 and overlap >= 0.99 and diff <= 1e-3, (overlap, diff)
    lg.update_conf(filter_threshold=0.9)  # the threshold stays a runtime key
    strict = lg.match(f0, f1)
    assert 0 < len(strict) < len(ref.match(f0, f1)) and np.all(strict.distances < 0.1)
    assert len(lg.match(_subset(f0, 0), f1)) == 0
    build_matcher("lightglue", features="aliked", backend=backend)  # reuses the file
    assert len(list((tmp_path / "cache").glob("lightglue-*-opset17.onnx"))) == 1
    with pytest.raises(ConfigError, match="backend must be one of"):
        build_matcher("lightglue", features="aliked", backend="tflite")
    with pytest.raises(ConfigError, match="cannot change at runtime"):
        lg.update_conf(backend="torch")


def test_tensorrt_shape_profiles_and_buckets():
    """What the TensorRT runners are given (checked here; building engines needs a GPU)."""
    from local_features_ros.backends.lightglue_export import INPUTS, tensorrt_profiles
    from local_features_ros.backends.onnxruntime_backend import _profile_options
    from local_features_ros.backends.tensorrt_backend import _bucket

    prof = tensorrt_profiles(128, max_keypoints=2048, opt_keypoints=512)
    assert list(prof) == list(INPUTS)
    assert prof["descriptors1"] == ((1, 1, 128), (1, 512, 128), (1, 2048, 128))
    opts = _profile_options(prof)
    assert opts["trt_profile_max_shapes"].startswith("keypoints0:1x2048x2,keypoints1:1x2048x2,")
    assert opts["trt_profile_min_shapes"].endswith("image_size1:1x2")
    assert _profile_options(None) == {}
    assert [_bucket(n) for n in (1, 2, 3, 480, 512, 513)] == [
        (1, 1), (2, 2), (3, 4), (257, 512), (257, 512), (513, 1024)]
