"""LF-Net's TF variable names -> our state-dict keys (the official ``vcg-uvic/lf-net-release``).

The layout conversion itself is shared with LIFT (``extractors/tf_weights.py``); this module only
states which TF variable feeds which parameter, for ``scripts/convert_tf_weights.py`` and for
``LFNet.adapt_state_dict``. Both take the extractor's full ``conf`` (``LFNet(...).conf``: the
architecture keys decide the table), so this module does not import the extractor, which imports
it. The table is documented in docs/lfnet_lift.md#converting-the-released-weights.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..tf_weights import NameTable, convert_arrays
from .networks import descriptor_side


def tf_name_table(conf: Mapping[str, Any]) -> NameTable:
    """(TF variable name, our state-dict key, kind) for every parameter / BN statistic of the
    architecture ``conf`` configures (``num_blocks``, ``num_scales``); kinds as ``tf_weights.KINDS``."""
    c = conf
    rows: NameTable = []

    def conv(tf: str, ours: str) -> None:
        rows.append((f"{tf}/weights", f"{ours}.weight", "conv"))
        rows.append((f"{tf}/biases", f"{ours}.bias", "vec"))

    def bn(tf: str, ours: str) -> None:
        for tfn, on in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                        ("moving_variance", "running_var")):
            rows.append((f"{tf}/{tfn}", f"{ours}.{on}", "vec"))

    d = "ConvOnlyResNet"
    conv(f"{d}/init_conv", "det.init_conv")
    for i in range(int(c["num_blocks"])):
        bn(f"{d}/block-{i + 1}/pre-bn", f"det.blocks.{i}.pre_bn")
        conv(f"{d}/block-{i + 1}/conv1", f"det.blocks.{i}.conv1")
        bn(f"{d}/block-{i + 1}/mid-bn", f"det.blocks.{i}.mid_bn")
        conv(f"{d}/block-{i + 1}/conv2", f"det.blocks.{i}.conv2")
    bn(f"{d}/fin-bn", "det.fin_bn")
    for k in range(int(c["num_scales"])):
        conv(f"{d}/score_conv_{k}", f"det.score_convs.{k}")
    conv(f"{d}/ori_conv", "det.ori_conv")
    s = "SimpleDesc"
    for i in range(3):
        conv(f"{s}/conv{i + 1}", f"desc.convs.{i}")
        bn(f"{s}/bn{i + 1}", f"desc.bns.{i}")
    rows.append((f"{s}/fc1/weights", "desc.fc1.weight", "fc_nhwc"))
    rows.append((f"{s}/fc1/biases", "desc.fc1.bias", "vec"))
    bn(f"{s}/fc-bn1", "desc.fc_bn1")
    rows.append((f"{s}/fc2/weights", "desc.fc2.weight", "fc"))
    rows.append((f"{s}/fc2/biases", "desc.fc2.bias", "vec"))
    return rows


def convert_tf_state(arrays: Mapping[str, np.ndarray], conf: Mapping[str, Any]
                     ) -> dict[str, torch.Tensor]:
    """TF LF-Net variables (name -> numpy) -> our state dict for ``conf`` (loads with ``strict=True``)."""
    side = descriptor_side(int(conf["patch_size"]))
    return convert_arrays(arrays, tf_name_table(conf), flat_chw=(256, side, side))
