"""ONNX (and TorchScript) export of an extractor's declared network parts, with a cache.

What is exported: ``Extractor.networks[name]`` (a ``NetworkDecl``): the part the extractor
calls through ``call_network``, in fp32, batch and image sizes dynamic where the decl says so.
Post-processing is never exported: it stays in torch in every backend.

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset
``OPSET`` (17). Why not the default dynamo exporter of torch 2.13: it needs the extra
``onnxscript`` package, and the traced exporter already gives dynamic height/width for these
convolutional graphs. Every file is checked with ``onnx.checker.check_model(full_check=True)``
before it is used.

Cache: ``$LFR_CACHE_DIR`` or ``~/.cache/local_features_ros/onnx``; file name
``<method>-<part>-<key>-opset<N>[-<shape>].onnx``, ``key`` = sha256 of the weights (every tensor
of the extractor's state dict), the restart-only config (runtime keys cannot change the graph:
``NetworkDecl`` parts read only restart-only keys), the part and the torch version. Writes are
atomic (temp file + rename), so two processes exporting at once never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..atomic import atomic_path

logger = logging.getLogger(__name__)

#: ONNX opset of every export (onnxruntime >= 1.12 and OpenVINO >= 2022 read it).
OPSET = 17

FORMATS = ("onnx", "torchscript")


def cache_dir() -> Path:
    """Where exports are cached (``LFR_CACHE_DIR`` overrides ``~/.cache/local_features_ros/onnx``)."""
    env = os.environ.get("LFR_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "local_features_ros" / "onnx"


def hash_state(h: Any, state: dict[str, torch.Tensor]) -> None:
    """Feed every tensor of ``state`` (names, dtypes, shapes, bytes) into hash ``h``: a cache
    key that changes with any weight (shared by the extractor and matcher exports)."""
    for k, v in sorted(state.items()):
        h.update(k.encode())
        t = v.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def export_key(extractor: Any, name: str, opset: int = OPSET) -> str:
    """16 hex digits identifying (weights, restart-only config, part, opset, torch version)."""
    h = hashlib.sha256()
    hash_state(h, extractor.state_dict())
    conf = {k: v for k, v in sorted(extractor.conf.items())
            if k not in extractor.runtime_keys and k != "backend"}
    h.update(json.dumps(conf, sort_keys=True, default=str).encode())
    h.update(f"{extractor.name}/{name}/{opset}/{torch.__version__}".encode())
    h.update(repr(extractor.networks[name]).encode())  # a changed declaration is a new graph
    return h.hexdigest()[:16]


class _Part(nn.Module):
    """The exported module: ``owner.<decl.call>(*inputs)`` as a tuple (owner's parameters)."""

    def __init__(self, owner: nn.Module, call: str):
        super().__init__()
        self.owner = owner
        self.call = call

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = getattr(self.owner, self.call)(*inputs)
        return out if isinstance(out, tuple) else (out,)


@contextlib.contextmanager
def _export_mode(extractor: nn.Module) -> Iterator[None]:
    """Eval, grad off, outside inference mode (tracing needs ordinary tensors), quiet tracer."""
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # InstanceNorm without running stats (DISK's U-Net) always normalises with the
            # input's statistics, in eval too: the exporter's "train=True" notice is expected.
            warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True.*")
            yield
    finally:
        extractor.train(was_training)


def _example_inputs(extractor: Any, name: str, shapes: tuple[tuple[int, ...], ...] | None
                    ) -> tuple[torch.Tensor, ...]:
    decl = extractor.networks[name]
    shapes = shapes or tuple(tuple(s) for _, s, _ in decl.inputs)
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(s, generator=gen).to(extractor.device) for s in shapes)


def check_exportable(extractor: Any, name: str | None = None,
                     exportable: Sequence[str] = ()) -> list[str]:
    """The part names to export; a clear ``ValueError`` when the method has none / not ``name``.

    ``exportable``: the methods that do declare network parts, named in the error. The caller
    asks the registry (``registry.exportable_methods``): the registry imports the backends to
    attach them to extractors, so this module must not import the registry."""
    if not extractor.networks:
        runs = "OpenCV" if not extractor.is_learned else "torch code that is not a single network"
        supported = (": " + ", ".join(exportable)) if exportable else ""
        raise ValueError(f"method '{extractor.name}' has no exportable network (it runs {runs}); "
                         f"export supports the methods that declare network parts{supported}")
    if name is None:
        return list(extractor.networks)
    if name not in extractor.networks:
        raise ValueError(f"method '{extractor.name}' has no network part '{name}' "
                         f"(parts: {', '.join(extractor.networks)})")
    return [name]


def write_onnx_module(module: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path,
                      input_names: list[str], output_names: list[str],
                      dynamic: dict[str, dict[int, str]] | None, opset: int,
                      metadata: dict[str, str]) -> Path:
    """Trace ``module`` on ``example`` to ONNX at ``path``: atomic write (temp file + rename),
    ``metadata`` recorded, ``onnx.checker.check_model(full_check=True)`` before the rename.
    The caller puts ``module`` in export mode (``_export_mode``); shared by every export."""
    import onnx

    path = Path(path).expanduser()
    with atomic_path(path) as tmp:
        torch.onnx.export(module, example, tmp, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, do_constant_folding=True)
        model = onnx.load(tmp)
        for k, v in {**metadata, "local_features_ros.opset": str(opset)}.items():
            model.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
    return path


def write_onnx(extractor: Any, name: str, path: str | Path, opset: int = OPSET,
               shapes: tuple[tuple[int, ...], ...] | None = None) -> Path:
    """Export part ``name`` to ``path`` (atomic), check it, record metadata. ``shapes``: fixed
    input shapes (no dynamic axes); default: the decl's example shapes with its dynamic axes."""
    check_exportable(extractor, name)
    decl = extractor.networks[name]
    path = Path(path).expanduser()
    in_names = [n for n, _, _ in decl.inputs]
    out_names = [n for n, _ in decl.outputs]
    dynamic: dict[str, dict[int, str]] | None = None
    if shapes is None:
        dynamic = {n: dict(ax) for n, _, ax in decl.inputs if ax}
        dynamic.update({n: dict(ax) for n, ax in decl.outputs if ax})
    with _export_mode(extractor):
        example = _example_inputs(extractor, name, shapes)
        write_onnx_module(_Part(extractor, decl.call), example, path, in_names, out_names,
                          dynamic, opset, {"local_features_ros.method": extractor.name,
                                           "local_features_ros.network": name,
                                           "local_features_ros.weights":
                                               str(extractor.weights_source)})
    logger.info("exported %s/%s to %s (opset %d, %s)", extractor.name, name, path, opset,
                "dynamic " + ", ".join(sorted({d for a in (dynamic or {}).values()
                                                for d in a.values()})) if dynamic
                else "static shapes")
    return path


def write_torchscript(extractor: Any, name: str, path: str | Path,
                      shapes: tuple[tuple[int, ...], ...] | None = None) -> Path:
    """Traced TorchScript of part ``name`` (fp32, on the extractor's device), atomic write."""
    check_exportable(extractor, name)
    path = Path(path).expanduser()
    with atomic_path(path) as tmp, _export_mode(extractor):
        example = _example_inputs(extractor, name, shapes)
        traced = torch.jit.trace(_Part(extractor, extractor.networks[name].call), example,
                                 check_trace=False)
        traced.save(tmp)
    return path


def export_network(extractor: Any, name: str, shapes: tuple[tuple[int, ...], ...] | None = None,
                   opset: int = OPSET) -> Path:
    """The cached ONNX file of part ``name`` (exported on first use)."""
    shape_tag = ("-" + "_".join("x".join(str(d) for d in s) for s in shapes)) if shapes else ""
    path = cache_dir() / (f"{extractor.name}-{name}-{export_key(extractor, name, opset)}"
                          f"-opset{opset}{shape_tag}.onnx")
    if path.is_file():
        return path
    try:
        return write_onnx(extractor, name, path, opset=opset, shapes=shapes)
    except ImportError as exc:
        from .interface import BackendUnavailable

        raise BackendUnavailable(f"exporting '{extractor.name}' needs the 'onnx' package "
                                 f"(pip install -r requirements-deploy.txt): {exc}") from exc
