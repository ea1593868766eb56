"""``local-features export``: a method's network part(s) to ONNX or TorchScript.

What is exported is the network only (``Extractor.networks``: SuperPoint's image -> (semi, raw
descriptors); D2-Net's dense feature map; DELF's block3 features + attention; LF-Net's score
logits + orientation and patch descriptor; LIFT's detector, orientation and descriptor nets);
detection, NMS and descriptor sampling stay in torch/numpy, which is why the ``backend`` key
gives the torch outputs. ONNX: opset 17 (``--opset``), height/width (and batch / patch count)
dynamic unless the part bakes its size in (``--shape``), checked with ``onnx.checker``.

A method with several parts writes one file each: ``FILE`` with ``.<part>`` before the suffix
(``--part NAME`` writes just that one to ``FILE``). Methods without a network (orb, sift,
akaze) are refused with the list of those that can be exported.

``--matcher lightglue`` exports the matcher network instead, for the features of ``--method``
(released weights for aliked/disk, else ``--matcher-weights PATH``; ``--matcher-set n_layers=N``):
inputs ``keypoints0/1`` (B, M|N, 2) pixels, ``descriptors0/1`` (B, M|N, D), ``image_size0/1``
(B, 2) [W, H]; outputs ``matches0`` (B, M) int64 (-1 = none) and ``scores0`` (B, M); keep the
matches with ``scores0 > filter_threshold``. Batch and both keypoint counts are dynamic. Adaptive
depth and width (early stopping, point pruning) are data-dependent and are **not** exported: the
graph runs every layer on every point, like the torch matcher with ``depth_confidence=-1
width_confidence=-1`` (see ``backends/lightglue_export.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("export a method's network part(s) to ONNX (opset 17, dynamic H/W) or TorchScript; "
        "--matcher lightglue: the LightGlue network (dynamic keypoint counts, adaptive depth/width "
        "off)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="extractor name (see `local-features methods`)")
    parser.add_argument("--weights", default=None, help="local checkpoint; 'random' = untrained; "
                        "default: shipped")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file")
    parser.add_argument("--part", default=None, help="one network part (default: all)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--shape", default=None, metavar="DIMS",
                        help="fixed input shape instead of dynamic axes, e.g. 1x1x480x640")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="extractor config override (restart-only keys shape the graph)")
    parser.add_argument("--matcher", default=None, choices=("lightglue",),
                        help="export this matcher's network instead of the extractor's: "
                             "lightglue for the features of --method (dynamic batch and keypoint "
                             "counts; adaptive depth/width are data-dependent and not exported: "
                             "every layer runs on every point)")
    parser.add_argument("--matcher-weights", default=None, metavar="PATH",
                        help="--matcher lightglue: local LightGlue weights file (default: the "
                             "released file for --method aliked/disk)")
    parser.add_argument("--matcher-set", dest="matcher_settings", action="append", default=[],
                        metavar="KEY=VALUE", help="--matcher lightglue: n_layers=N (the layers "
                        "exported; the other matcher keys do not change the graph)")


def main(args: argparse.Namespace) -> int:
    from ..backends.onnx_export import OPSET, check_exportable, write_onnx, write_torchscript
    from ..registry import build_extractor, get_extractor_class
    from ._common import parse_settings

    if args.matcher:
        return export_matcher(args)
    cls = get_extractor_class(args.method)
    if not cls.networks:
        check_exportable(cls)  # raises with the reason and the exportable methods
    conf = parse_settings(args.settings)
    conf.pop("backend", None)  # export always traces the torch modules
    extractor = build_extractor(args.method, weights=args.weights, device=args.device, **conf)
    parts = check_exportable(extractor, args.part)
    shapes = None
    if args.shape:
        try:
            shapes = (tuple(int(d) for d in args.shape.lower().split("x")),)
        except ValueError as exc:
            raise ValueError(f"--shape must look like 1x1x480x640, got '{args.shape}'") from exc
    out = Path(args.out).expanduser()
    for part in parts:
        target = out if len(parts) == 1 else out.with_name(f"{out.stem}.{part}{out.suffix}")
        if args.format == "onnx":
            write_onnx(extractor, part, target, opset=args.opset or OPSET, shapes=shapes)
            decl = extractor.networks[part]
            dims = sorted({d for _, _, ax in decl.inputs for d in ax.values()})
            how = ("fixed " + args.shape) if shapes else ("dynamic " + ", ".join(dims))
            print(f"wrote {target} ({args.method}/{part}, ONNX opset {args.opset or OPSET}, "
                  f"{how}; inputs {', '.join(n for n, _, _ in decl.inputs)} -> outputs "
                  f"{', '.join(n for n, _ in decl.outputs)}; checked with onnx.checker)")
        else:
            write_torchscript(extractor, part, target, shapes=shapes)
            print(f"wrote {target} ({args.method}/{part}, TorchScript trace, fp32)")
    return 0


def export_matcher(args: argparse.Namespace) -> int:
    """``--matcher lightglue``: the matcher network of ``--method``'s features to ``--out``."""
    from ..backends.lightglue_export import (INPUTS, OUTPUTS, write_lightglue_onnx,
                                             write_lightglue_torchscript)
    from ..backends.onnx_export import OPSET
    from ..matchers.base import build_matcher
    from ._common import parse_settings

    extractor_only = [flag for flag, value in (("--part", args.part), ("--shape", args.shape),
                                               ("--weights", args.weights),
                                               ("--set", args.settings)) if value]
    if extractor_only:
        raise ValueError(f"{', '.join(extractor_only)} apply to extractor exports; with --matcher "
                         "use --matcher-weights / --matcher-set (keypoint counts are dynamic)")
    conf = dict(parse_settings(args.matcher_settings))
    if args.matcher_weights:
        conf["weights"] = args.matcher_weights
    conf.setdefault("features", args.method)
    # the export is the full network: adaptive depth/width off (they cannot be traced)
    conf.update(depth_confidence=-1, width_confidence=-1, backend="torch")
    matcher = build_matcher(args.matcher, device=args.device, **conf)
    out = Path(args.out).expanduser()
    layers = len(matcher.model.transformers)
    if args.format == "onnx":
        opset = args.opset or OPSET
        write_lightglue_onnx(matcher, out, opset=opset)
        print(f"wrote {out} (lightglue for {args.method}, {Path(matcher.weights_path).name}, "
              f"{layers} layers, ONNX opset {opset}, dynamic batch, keypoints0, keypoints1; "
              f"adaptive depth/width off; inputs {', '.join(INPUTS)} -> outputs "
              f"{', '.join(OUTPUTS)}; checked with onnx.checker)")
    else:
        write_lightglue_torchscript(matcher, out)
        print(f"wrote {out} (lightglue for {args.method}, {layers} layers, TorchScript trace, "
              "fp32, adaptive depth/width off)")
    return 0
