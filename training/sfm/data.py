"""Train/validation pair datasets from a ``data`` config section (shared by both trainers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from .pairs import GeometricPairs
from .render import render_scene
from .scene_index import SceneError, SceneIndex, read_megadepth_scene

#: official validation pair list is drawn once with numpy seed 42
#: (docs/method_facts/sfm.md#pair-sampling-and-crops)
VALIDATION_SEED = 42


def load_scenes(entries: Sequence[Any] | None, root: str | os.PathLike | None = None
                ) -> list[SceneIndex]:
    """Scenes named in a config: each entry is an ``index.npz``, a folder holding one, a
    MegaDepth-style scene folder, a ``.txt`` list of such entries (one per line, official
    ``train_scenes.txt`` style, relative to ``root``) or ``{render: {...}}`` (rendered on demand
    with :func:`training.sfm.render.render_scene`)."""
    out: list[SceneIndex] = []
    base = Path(root) if root else None
    for e in entries or []:
        if isinstance(e, dict):
            if "render" not in e:
                raise SceneError(f"scene entry {e} must be a path or {{render: {{...}}}}")
            out.append(render_scene(**dict(e["render"])).index)
            continue
        p = Path(str(e))
        if base is not None and not p.is_absolute():
            p = base / p
        if p.suffix == ".txt":
            if not p.is_file():
                raise FileNotFoundError(f"scene list not found: {p}")
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            out.extend(load_scenes(lines, base or p.parent))
        elif p.suffix == ".npz":
            out.append(SceneIndex.load(p))
        elif (p / "index.npz").is_file():
            out.append(SceneIndex.load(p / "index.npz", root=p))
        else:
            out.append(read_megadepth_scene(p))
    return out


def build_pair_datasets(data: Mapping[str, Any], seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """``data.scenes`` (training) and ``data.val_scenes`` (validation; none -> no validation).

    Validation uses ``val_pairs_per_scene`` pairs, drawn once (seed 42), without augmentation.
    """
    data = dict(data)
    root = data.get("root")
    train = GeometricPairs(load_scenes(data.get("scenes"), root), data, seed=seed, resample=True)
    val = None
    if data.get("val_scenes"):
        vconf = {**data, "pairs_per_scene": int(data.get("val_pairs_per_scene", 25)),
                 "flip_pair": False}
        val = GeometricPairs(load_scenes(data.get("val_scenes"), root), vconf, seed=VALIDATION_SEED,
                             resample=False)
    return train, val


def held_out_scene_images(val: Dataset | None, limit: int = 2) -> list[tuple[str, np.ndarray]]:
    """Images of the validation scenes (never trained on), for the export check: the first image
    of each validation scene, then the next ones, up to ``limit``. None without validation."""
    if not isinstance(val, GeometricPairs):
        return []
    out: list[tuple[str, np.ndarray]] = []
    longest = max(len(idx) for idx in val.scenes)
    for k in range(longest):
        for idx in val.scenes:
            if k < len(idx) and len(out) < limit:
                out.append((str(idx.image_paths[k]), idx.load_image(k)))
    return out
