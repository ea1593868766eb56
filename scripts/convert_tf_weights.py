#!/usr/bin/env python3
"""Convert released LF-Net (TF1) / LIFT (tf-lift) weights to a local_features_ros checkpoint.

Why a script: the official models are TF1 checkpoints; our runtime never imports TensorFlow.
Two ways in:

1. ``--input model.ckpt-XXXX`` (a TF checkpoint prefix) reads variables with TensorFlow, which
   must be installed in *that* environment (it is not a project dependency);
2. ``--input vars.npz`` reads a ``name -> array`` dump made anywhere TF runs, e.g.::

       import numpy as np, tensorflow as tf
       r = tf.train.load_checkpoint("release/models/outdoor/model.ckpt-XXXX")
       np.savez("lfnet_vars.npz", **{k: r.get_tensor(k) for k in r.get_variable_to_shape_map()})

The name tables live in each method's package (``extractors/lfnet/tf_convert.py``,
``extractors/lift/tf_convert.py``); reading the variables and re-laying them out is shared
(``extractors/tf_weights.py``); both are documented in docs/lfnet_lift.md. Optimiser slots
(``.../Adam``), ``global_step`` and outer scopes are ignored; conv kernels go from
``[k, k, in, out]`` to ``[out, in, k, k]``, dense kernels are transposed and the first dense layer
after a conv stack has its rows permuted from TF's (h, w, c) flatten order to torch's (c, h, w).
The result loads with ``strict=True``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger("convert_tf_weights")


def convert(method: str, arrays: Mapping[str, np.ndarray], conf: Mapping[str, Any]) -> dict:
    """-> our state dict for ``method`` (``lfnet`` or ``lift``); ``conf`` is the extractor's full
    config (``model.conf``), whose architecture keys decide the name table."""
    if method == "lfnet":
        from local_features_ros.extractors.lfnet.tf_convert import convert_tf_state
    elif method == "lift":
        from local_features_ros.extractors.lift.tf_convert import convert_tf_state
    else:
        raise ValueError(f"method must be lfnet or lift, got '{method}'")
    return convert_tf_state(arrays, conf)


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects key=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("method", choices=["lfnet", "lift"])
    ap.add_argument("--input", required=True, help=".npz variable dump or TF checkpoint prefix")
    ap.add_argument("--output", required=True, help="output checkpoint (.pth)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extractor config the weights belong to (e.g. ori_variant=theano)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from local_features_ros.extractors.tf_weights import read_variables
    from local_features_ros.registry import get_extractor_class
    from local_features_ros.weights import save_checkpoint

    cls = get_extractor_class(args.method)
    model = cls(**_parse_set(args.set))  # validates the config and gives the target keys
    state = convert(args.method, read_variables(args.input), model.conf)
    model.load_state_dict(state, strict=True)  # fail here, not at run time
    out = save_checkpoint(args.output, args.method, state, config=model.conf,
                          source=str(args.input))
    print(f"wrote {out} ({len(state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
