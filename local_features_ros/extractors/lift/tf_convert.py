"""LIFT's tf-lift variable names -> our state-dict keys (the BN-free release models).

The layout conversion itself is shared with LF-Net (``extractors/tf_weights.py``); this module only
states which TF variable feeds which parameter, for ``scripts/convert_tf_weights.py`` and for
``LIFT.adapt_state_dict``. Both take the extractor's full ``conf`` (``LIFT(...).conf``: the
variants decide the table), so this module does not import the extractor, which imports it.
The table is documented in docs/lfnet_lift.md#converting-the-released-weights.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..tf_weights import NameTable, convert_arrays
from .networks import subnorm_kernel


def tf_name_table(conf: Mapping[str, Any]) -> NameTable:
    """(tf-lift variable name, our key, kind) for the BN-free release models (kinds as
    ``tf_weights.KINDS``). ``subnorm`` kernels of the original descriptor are not TF variables;
    they keep their configured Gaussian (or come from a Theano file, see the docs)."""
    c = conf
    if c["use_batch_norm"]:
        raise ValueError("TF name mapping covers use_batch_norm=False (the released models) only")
    rows: NameTable = []

    def layer(tf: str, ours: str, kind: str) -> None:
        rows.append((f"network/lift/{tf}/weights", f"{ours}.weight", kind))
        rows.append((f"network/lift/{tf}/biases", f"{ours}.bias", "vec"))

    layer("kp/conv-ghh-1", "det.conv", "conv")
    for i in range(3):
        layer(f"ori/conv-act-pool-{i + 1}", f"ori.convs.{i}", "conv")
    layer("ori/fc-ghh-drop-4", "ori.fc4", "fc_nhwc" if c["ori_variant"] == "tflift" else "fc")
    layer("ori/fc-ghh-5", "ori.fc5", "fc")
    layer("desc/conv-act-pool-norm-1", "desc.convs.0", "conv")
    layer("desc/conv-act-pool-norm-2", "desc.convs.1", "conv")
    layer("desc/conv-act-pool-3", "desc.convs.2", "conv")
    return rows


def convert_tf_state(arrays: Mapping[str, np.ndarray], conf: Mapping[str, Any]
                     ) -> dict[str, torch.Tensor]:
    """tf-lift variables (name -> numpy) -> our state dict for ``conf`` (strict load)."""
    c = conf
    out = convert_arrays(arrays, tf_name_table(c), flat_chw=(50, 5, 5))
    if c["desc_variant"] == "original":
        k = subnorm_kernel(int(c["subnorm_ksize"]), float(c["subnorm_sigma"]))
        for i in range(2):
            out[f"desc.subnorms.{i}.kernel"] = k.clone()
    return out
