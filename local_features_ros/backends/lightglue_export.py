"""ONNX / TorchScript export of the LightGlue matcher network (``matchers/lightglue.py``).

Why a graph of its own: the extractor exports (``onnx_export.py``) take an image; LightGlue takes
two keypoint sets whose sizes change every frame, and its torch forward has data-dependent
control flow (adaptive depth = early stop, adaptive width = point pruning) that a traced graph
cannot hold. So the export is the **full-depth, full-width** network: every one of ``n_layers``
layers runs on every point, which is what the torch matcher computes with
``depth_confidence <= 0`` and ``width_confidence <= 0`` (tests: same matches).

Graph (``LightGlueGraph``), fp32, ONNX opset ``OPSET`` (17), batch and both keypoint counts
dynamic (axes ``batch``, ``keypoints0``, ``keypoints1``):

- inputs ``keypoints0`` (B, M, 2) / ``keypoints1`` (B, N, 2): pixels ``[x, y]`` inside the image
  (the matcher clamps them); ``descriptors0`` (B, M, D) / ``descriptors1`` (B, N, D);
  ``image_size0`` / ``image_size1`` (B, 2) float ``[W, H]`` (keypoints are normalised inside, as
  kornia does: ``(k - size/2) / (max(size)/2)``).
- outputs ``matches0`` (B, M) int64: index in image 1 of the mutual best match of each point of
  image 0, -1 where the best match is not mutual; ``scores0`` (B, M) float: that match's
  confidence (``exp`` of the log assignment), 0 where not mutual.

``filter_threshold`` is not in the graph: a match is kept where ``scores0 > filter_threshold``
(exactly kornia's ``filter_matches``), so the threshold stays a runtime key. The dustbin row and
column of the assignment are not computed: the matches read only the inner (M, N) block.

Cache (``backend:`` of the matcher): ``cache_dir()/lightglue-<key>-opset<N>.onnx``, ``key`` =
sha256 of the weights, the layer count and the torch version; written atomically, checked with
``onnx.checker`` (``onnx_export.write_onnx_module``). TensorRT: one shape profile over 1..4096
keypoints per image (``tensorrt_profiles``), so a new keypoint count does not build a new engine.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path
from .onnx_export import OPSET, _export_mode, cache_dir, hash_state, write_onnx_module

logger = logging.getLogger(__name__)

__all__ = ["INPUTS", "OUTPUTS", "DYNAMIC_AXES", "LightGlueGraph", "export_key",
           "write_lightglue_onnx", "write_lightglue_torchscript", "export_lightglue",
           "tensorrt_profiles", "TRT_MAX_KEYPOINTS"]

INPUTS = ("keypoints0", "keypoints1", "descriptors0", "descriptors1", "image_size0",
          "image_size1")
OUTPUTS = ("matches0", "scores0")
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "keypoints0": {0: "batch", 1: "keypoints0"}, "keypoints1": {0: "batch", 1: "keypoints1"},
    "descriptors0": {0: "batch", 1: "keypoints0"}, "descriptors1": {0: "batch", 1: "keypoints1"},
    "image_size0": {0: "batch"}, "image_size1": {0: "batch"},
    "matches0": {0: "batch", 1: "keypoints0"}, "scores0": {0: "batch", 1: "keypoints0"},
}


#: Keypoint counts of the TensorRT shape profile (``tensorrt_profiles``): one engine serves
#: 1..max keypoints per image, tuned for opt. Without a profile onnxruntime's TensorRT provider
#: builds a new engine for every new keypoint count (seconds each), i.e. on nearly every frame.
TRT_MIN_KEYPOINTS, TRT_OPT_KEYPOINTS, TRT_MAX_KEYPOINTS = 1, 1024, 4096


def tensorrt_profiles(descriptor_dim: int, max_keypoints: int = TRT_MAX_KEYPOINTS,
                      opt_keypoints: int = TRT_OPT_KEYPOINTS
                      ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """One TensorRT shape profile (batch 1) over the keypoint counts, so varying counts reuse
    one engine: input name -> (min, opt, max) shapes."""
    opt = min(opt_keypoints, max_keypoints)
    out = {}
    for i in (0, 1):
        out[f"keypoints{i}"] = tuple((1, k, 2) for k in (TRT_MIN_KEYPOINTS, opt, max_keypoints))
        out[f"descriptors{i}"] = tuple((1, k, descriptor_dim)
                                       for k in (TRT_MIN_KEYPOINTS, opt, max_keypoints))
    for i in (0, 1):
        out[f"image_size{i}"] = ((1, 2), (1, 2), (1, 2))
    return {name: out[name] for name in INPUTS}


def _normalize(kpts: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """kornia's ``normalize_keypoints``: centre at size/2, scale by max(size)/2."""
    size = size.to(kpts.dtype)
    shift = size / 2
    scale = size.max(1).values / 2
    return (kpts - shift[:, None]) / scale[:, None, None]


def _encoding(posenc: nn.Module, kpts: torch.Tensor) -> torch.Tensor:
    """kornia's ``LearnableFourierPositionalEncoding.forward`` with ``repeat_interleave(2, -1)``
    written as stack + flatten (same values): the traced exporter loses the tensor rank of a
    ``repeat_interleave`` under dynamic shapes and then cannot export the attention's
    transposes."""
    projected = posenc.Wr(kpts)
    emb = torch.stack([torch.cos(projected), torch.sin(projected)], 0).unsqueeze(-3)
    return torch.stack([emb, emb], -1).flatten(-2)


class LightGlueGraph(nn.Module):
    """kornia ``LightGlue`` without adaptive depth/width and without the match threshold:
    ``(kpts0, kpts1, desc0, desc1, size0, size1) -> (matches0, scores0)`` (module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor,
                desc1: torch.Tensor, size0: torch.Tensor, size1: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        lg = self.model
        enc0 = _encoding(lg.posenc, _normalize(kpts0, size0))
        enc1 = _encoding(lg.posenc, _normalize(kpts1, size1))
        d0, d1 = lg.input_proj(desc0), lg.input_proj(desc1)
        for layer in lg.transformers:
            d0, d1 = layer(d0, d1, enc0, enc1)
        scores = self._log_assignment(lg.log_assignment[len(lg.transformers) - 1], d0, d1)
        best0, best1 = scores.max(2), scores.max(1)
        m0, m1 = best0.indices, best1.indices
        idx0 = torch.arange(m0.shape[1], device=m0.device)[None]
        mutual0 = idx0 == m1.gather(1, m0)
        score0 = torch.where(mutual0, best0.values.exp(), torch.zeros_like(best0.values))
        return torch.where(mutual0, m0, torch.full_like(m0, -1)), score0

    @staticmethod
    def _log_assignment(head: nn.Module, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        """The inner (B, M, N) block of kornia's ``MatchAssignment`` + ``sigmoid_log_double_
        softmax`` (same operations in the same order; no dustbins: the matches never read them)."""
        md0, md1 = head.final_proj(d0), head.final_proj(d1)
        d = md0.shape[-1]
        md0, md1 = md0 / d ** 0.25, md1 / d ** 0.25
        sim = torch.einsum("bmd,bnd->bmn", md0, md1)
        z0, z1 = head.matchability(d0), head.matchability(d1)
        certainties = nn.functional.logsigmoid(z0) + nn.functional.logsigmoid(z1).transpose(1, 2)
        scores0 = nn.functional.log_softmax(sim, 2)
        scores1 = nn.functional.log_softmax(sim.transpose(-1, -2).contiguous(), 2).transpose(-1, -2)
        return scores0 + scores1 + certainties


def _graph(matcher: Any) -> LightGlueGraph:
    """A CPU fp32 copy of the matcher's network (the CUDA half-precision attention path of
    kornia is chosen by device at run time; tracing on the CPU records the fp32 path)."""
    model = copy.deepcopy(matcher.model).to("cpu", torch.float32).eval()
    for layer in model.transformers:
        layer.self_attn.inner_attn.allow_flash = False
        layer.cross_attn.flash = None
    return LightGlueGraph(model).eval()


def _example(matcher: Any, m: int = 48, n: int = 40) -> tuple[torch.Tensor, ...]:
    """Random inputs with different M and N (so the two keypoint axes stay separate)."""
    gen = torch.Generator().manual_seed(0)
    size = torch.tensor([[640.0, 480.0]])
    d = int(matcher.input_dim)
    k0, k1 = torch.rand(1, m, 2, generator=gen) * size, torch.rand(1, n, 2, generator=gen) * size
    d0 = nn.functional.normalize(torch.randn(1, m, d, generator=gen), dim=-1)
    d1 = nn.functional.normalize(torch.randn(1, n, d, generator=gen), dim=-1)
    return k0, k1, d0, d1, size, size.clone()


def export_key(matcher: Any, opset: int = OPSET) -> str:
    """16 hex digits of (weights, layer count, opset, torch version): the cache file name."""
    h = hashlib.sha256()
    hash_state(h, matcher.model.state_dict())
    h.update(f"lightglue/{len(matcher.model.transformers)}/{opset}/{torch.__version__}".encode())
    return h.hexdigest()[:16]


def write_lightglue_onnx(matcher: Any, path: str | Path, opset: int = OPSET) -> Path:
    """Export ``matcher``'s network (``LightGlueGraph``) to ``path``: dynamic batch and keypoint
    counts, checked with ``onnx.checker``, atomic."""
    graph = _graph(matcher)
    with _export_mode(graph):
        out = write_onnx_module(
            graph, _example(matcher), path, list(INPUTS), list(OUTPUTS), DYNAMIC_AXES, opset,
            {"local_features_ros.matcher": "lightglue",
             "local_features_ros.weights": str(matcher.weights_path),
             "local_features_ros.n_layers": str(len(graph.model.transformers)),
             "local_features_ros.adaptive": "off (full depth and width)",
             "local_features_ros.outputs": "matches0 (-1 = none), scores0; keep scores0 > "
                                           "filter_threshold"})
    logger.info("exported lightglue (%s) to %s (opset %d, dynamic batch, keypoints0, keypoints1)",
                Path(matcher.weights_path).name, out, opset)
    return out


def write_lightglue_torchscript(matcher: Any, path: str | Path) -> Path:
    """Traced TorchScript of the same graph (fp32, CPU; ``.to(device)`` after loading)."""
    path = Path(path).expanduser()
    graph = _graph(matcher)
    with atomic_path(path) as tmp, _export_mode(graph):
        torch.jit.trace(graph, _example(matcher), check_trace=False).save(tmp)
    return path


def export_lightglue(matcher: Any, opset: int = OPSET) -> Path:
    """The cached ONNX file of ``matcher``'s network (exported on first use)."""
    path = cache_dir() / f"lightglue-{export_key(matcher, opset)}-opset{opset}.onnx"
    if path.is_file():
        return path
    try:
        return write_lightglue_onnx(matcher, path, opset=opset)
    except ImportError as exc:
        from .interface import BackendUnavailable

        raise BackendUnavailable("exporting LightGlue needs the 'onnx' package (pip install -r "
                                 f"requirements-deploy.txt): {exc}") from exc
