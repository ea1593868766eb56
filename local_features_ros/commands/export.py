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
(released weights for aliked/disk/xfeat, else ``--matcher-weights PATH``; ``--matcher-set n_layers=N``):
inputs ``keypoints0/1`` (B, M|N, 2) pixels, ``descriptors0/1`` (B, M|N, D), ``image_size0/1``
(B, 2) [W, H]; outputs ``matches0`` (B, M) int64 (-1 = none) and ``scores0`` (B, M); keep the
matches with ``scores0 > filter_threshold``. Batch and both keypoint counts are dynamic. Adaptive
depth and width (early stopping, point pruning) are data-dependent and are **not** exported: the
graph runs every layer on every point, like the torch matcher with ``depth_confidence=-1
width_confidence=-1`` (see ``backends/lightglue_export.py``).

Exit statuses (``_common.py``): 2 for a method without a network, an unknown part, a bad
``--shape`` or setting, a missing or wrong weights file (nothing written); 1 when the trace or the
ONNX check fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..conventions import ConfigError
from ._common import add_extractor_arguments, extractor_options, parse_settings, run_command

HELP = ("export a method's network part(s) to ONNX (opset 17, dynamic H/W) or TorchScript; "
        "--matcher lightglue: the LightGlue network (dynamic keypoint counts, adaptive depth/width "
        "off)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser, weights_help="local checkpoint; 'random' = untrained; "
                            "default: shipped", precision=False)
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file")
    parser.add_argument("--part", default=None, help="one network part (default: all)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--shape", default=None, metavar="DIMS",
                        help="fixed input shape instead of dynamic axes, e.g. 1x1x480x640")
    parser.add_argument("--matcher", default=None, choices=("lightglue",),
                        help="export this matcher's network instead of the extractor's: "
                             "lightglue for the features of --method (dynamic batch and keypoint "
                             "counts; adaptive depth/width are data-dependent and not exported: "
                             "every layer runs on every point)")
    parser.add_argument("--matcher-weights", default=None, metavar="PATH",
                        help="--matcher lightglue: local LightGlue weights file (default: the "
                             "released file for --method aliked/disk/xfeat)")
    parser.add_argument("--matcher-set", dest="matcher_settings", action="append", default=[],
                        metavar="KEY=VALUE", help="--matcher lightglue: n_layers=N (the layers "
                        "exported; the other matcher keys do not change the graph)")


def parse_shape(text: str, decl: Any, part: str) -> tuple[tuple[int, ...], ...]:
    """``--shape 1x1x480x640`` -> the fixed input shapes of single-input part ``part``."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--shape must look like 1x1x480x640, got '{text}'") from None
    if any(d < 1 for d in dims):
        raise ConfigError(f"--shape dimensions must be positive, got '{text}'")
    if len(decl.inputs) != 1:
        raise ConfigError(f"--shape fixes single-input parts only; part '{part}' takes "
                          f"{len(decl.inputs)} inputs")
    name, example, _ = decl.inputs[0]
    if len(dims) != len(example):
        raise ConfigError(f"--shape {text} has {len(dims)} dimensions; part '{part}' takes "
                          f"{len(example)} ({name}, e.g. {'x'.join(map(str, example))})")
    return (dims,)


def prepare(args: argparse.Namespace) -> tuple[Any, list[str], dict[str, Any], Path]:
    """Check method, part, shape, settings and output, then build (errors: status 2)."""
    from ..backends.onnx_export import check_exportable
    from ..registry import exportable_methods, get_extractor_class

    cls = get_extractor_class(args.method)
    # no network / no such part, before building
    parts = check_exportable(cls, args.part, exportable=exportable_methods())
    options = extractor_options(args, args.method)
    if options.precision != "fp32":
        raise ConfigError(f"export traces the network in fp32 (precision={options.precision}: "
                          "set precision where the exported network runs, with backend=...)")
    options.conf.pop("backend", None)  # export always traces the torch modules
    shapes = {p: parse_shape(args.shape, cls.networks[p], p) for p in parts} if args.shape else {}
    out = Path(args.out).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder {out.parent}: {exc.strerror or exc}") \
            from exc
    return options.build(), parts, shapes, out


def export_parts(args: argparse.Namespace,
                 job: tuple[Any, list[str], dict[str, Any], Path]) -> int:
    """Write one file per part (``FILE`` with ``.<part>`` before the suffix when several)."""
    from ..backends.onnx_export import OPSET, write_onnx, write_torchscript

    extractor, parts, shapes, out = job
    for part in parts:
        target = out if len(parts) == 1 else out.with_name(f"{out.stem}.{part}{out.suffix}")
        fixed = shapes.get(part)
        if args.format == "onnx":
            write_onnx(extractor, part, target, opset=args.opset or OPSET, shapes=fixed)
            decl = extractor.networks[part]
            dims = sorted({d for _, _, ax in decl.inputs for d in ax.values()})
            how = ("fixed " + args.shape) if fixed else ("dynamic " + ", ".join(dims))
            print(f"wrote {target} ({args.method}/{part}, ONNX opset {args.opset or OPSET}, "
                  f"{how}; inputs {', '.join(n for n, _, _ in decl.inputs)} -> outputs "
                  f"{', '.join(n for n, _ in decl.outputs)}; checked with onnx.checker)")
        else:
            write_torchscript(extractor, part, target, shapes=fixed)
            print(f"wrote {target} ({args.method}/{part}, TorchScript trace, fp32)")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.matcher:
        return run_command("export", lambda: prepare_matcher(args),
                           lambda matcher: export_matcher(args, matcher))
    return run_command("export", lambda: prepare(args), lambda job: export_parts(args, job))


def prepare_matcher(args: argparse.Namespace) -> Any:
    """``--matcher lightglue``: check the options and build the matcher (errors: status 2)."""
    from ..matchers.base import build_matcher
    from ..registry import get_extractor_class

    extractor_only = [flag for flag, value in (("--part", args.part), ("--shape", args.shape),
                                               ("--weights", args.weights),
                                               ("--set", args.settings)) if value]
    if extractor_only:
        raise ConfigError(f"{', '.join(extractor_only)} apply to extractor exports; with --matcher "
                          "use --matcher-weights / --matcher-set (keypoint counts are dynamic)")
    get_extractor_class(args.method)
    conf: dict[str, Any] = dict(parse_settings(args.matcher_settings))
    if args.matcher_weights:
        conf["weights"] = args.matcher_weights
    conf.setdefault("features", args.method)
    # the export is the full network: adaptive depth/width off (they cannot be traced)
    conf.update(depth_confidence=-1, width_confidence=-1, backend="torch")
    matcher = build_matcher(args.matcher, device=args.device or "cpu", **conf)
    Path(args.out).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return matcher


def export_matcher(args: argparse.Namespace, matcher: Any) -> int:
    """The matcher network of ``--method``'s features to ``--out``."""
    from ..backends.lightglue_export import (INPUTS, OUTPUTS, write_lightglue_onnx,
                                             write_lightglue_torchscript)
    from ..backends.onnx_export import OPSET

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
