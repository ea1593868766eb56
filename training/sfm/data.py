"""Train/validation pair datasets from a ``data`` config section (shared by both trainers)."""

from __future__ import annotations

from typing import Any, Mapping

from torch.utils.data import Dataset

from .pairs import GeometricPairs
from .scene_index import load_scenes

#: official validation pair list is drawn once with numpy seed 42 (methods.md §2.5)
VALIDATION_SEED = 42


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
