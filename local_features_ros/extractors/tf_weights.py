"""TF1 checkpoint variables -> torch state dicts, shared by the LF-Net and LIFT conversions.

Why one module: both official releases are TF1 checkpoints with the same layouts (conv kernels
``[k, k, in, out]``, dense kernels ``[in, out]``, a first dense layer that reads TF's (h, w, c)
flatten order). Each method only supplies its name table ``(tf name, our key, kind)``
(``lfnet/tf_convert.py``, ``lift/tf_convert.py``); reading the variables, finding them under
outer scopes and re-laying them out happens here, for ``scripts/convert_tf_weights.py`` and for
``load_weights`` on a ``.pth`` that still carries TF names. The runtime never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

__all__ = ["KINDS", "NameTable", "convert_arrays", "find_var", "read_variables", "tensor_arrays"]

#: layouts a name table may ask for: ``conv`` [k,k,in,out] -> [out,in,k,k]; ``fc`` [in,out] ->
#: [out,in]; ``fc_nhwc`` like fc with the input rows permuted from TF's (h, w, c) flatten order
#: to torch's (c, h, w); ``vec`` copied as is.
KINDS = ("conv", "fc", "fc_nhwc", "vec")

#: (TF variable name, our state-dict key, kind)
NameTable = list[tuple[str, str, str]]


def read_variables(path: str | Path) -> dict[str, np.ndarray]:
    """``.npz`` dump or TF checkpoint prefix -> ``{name: array}``; TensorFlow is only needed
    (and imported) for a raw checkpoint."""
    p = Path(path)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    try:
        import tensorflow as tf  # noqa: PLC0415 (optional, only for raw TF checkpoints)
    except ImportError as exc:
        raise RuntimeError(
            f"{path} is not an .npz dump and TensorFlow is not installed; dump the variables "
            "to .npz where TF runs (see scripts/convert_tf_weights.py --help)") from exc
    reader = tf.train.load_checkpoint(str(path))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def tensor_arrays(state: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The tensors of a loaded state dict as numpy arrays (a TF-named ``.pth`` on load)."""
    return {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def find_var(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Exact name, or the one name ending in ``/name`` (checkpoints nest outer scopes); optimiser
    slots (``name/Adam``) never match. Missing or ambiguous names raise ``KeyError``."""
    if name in arrays:
        return np.asarray(arrays[name])
    hits = [k for k in arrays if k.endswith("/" + name) or k.endswith("/" + name + ":0")
            or k == name + ":0"]
    if len(hits) != 1:
        raise KeyError(f"TF variable '{name}' {'not found' if not hits else 'ambiguous: ' + str(hits)}")
    return np.asarray(arrays[hits[0]])


def convert_arrays(arrays: Mapping[str, np.ndarray], table: NameTable,
                   flat_chw: tuple[int, int, int] | None = None) -> dict[str, torch.Tensor]:
    """Apply a name table; ``flat_chw`` is the (C, H, W) map an ``fc_nhwc`` layer flattens.
    BN ``num_batches_tracked`` counters are added as 0 so the result loads with ``strict=True``."""
    out: dict[str, torch.Tensor] = {}
    for tf, key, kind in table:
        if kind not in KINDS:
            raise ValueError(f"{tf}: unknown kind '{kind}' (one of {', '.join(KINDS)})")
        a = find_var(arrays, tf).astype(np.float32)
        if kind == "conv":
            if a.ndim != 4:
                raise ValueError(f"{tf}: expected [k, k, in, out], got shape {a.shape}")
            a = a.transpose(3, 2, 0, 1)
        elif kind == "fc":
            a = a.T
        elif kind == "fc_nhwc":
            if flat_chw is None:
                raise ValueError("fc_nhwc needs the (C, H, W) of the flattened map")
            ch, hh, ww = flat_chw
            a = a.reshape(hh, ww, ch, -1).transpose(2, 0, 1, 3).reshape(ch * hh * ww, -1).T
        out[key] = torch.from_numpy(np.ascontiguousarray(a))
        if key.endswith(".running_var"):
            out[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out
