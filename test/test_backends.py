"""Deployment backends: ONNX export (``local-features export``) and ``backend: onnxruntime |
openvino`` giving the torch fp32 outputs; clear errors for methods without a network.

CPU only, generated images; every export goes to ``tmp_path`` (``LFR_CACHE_DIR``).
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch

from local_features_ros import cli
from local_features_ros.evaluation.speed import benchmark_image
from local_features_ros.extractors.base import ConfigError, cpu_supports_bf16
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
    assert cli.main(["export", "--method", "orb", "--out", str(tmp_path / "orb.onnx")]) == 1
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
