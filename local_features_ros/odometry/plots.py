"""Top view (x-z) of an estimated trajectory against ground truth.

Why x-z: poses are camera poses with the first camera as the world, so x is to the right and z
forward of the starting camera and y points down: x-z is the ground plane for a forward-looking
camera on a vehicle or a person. Agg backend: evaluation runs headless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_path  # noqa: E402

__all__ = ["plot_top_view"]


def plot_top_view(estimated: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray | None],
                  path: Path, title: str) -> Path:
    """Write a PNG with the estimated (red) and true (black) x-z positions; frames without
    ground truth are left out of the black line."""
    est = np.array([np.asarray(T)[:3, 3] for T in estimated])
    gt = np.array([np.asarray(T)[:3, 3] for T in ground_truth if T is not None]) \
        if ground_truth else np.zeros((0, 3))
    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    if len(gt):
        ax.plot(gt[:, 0], gt[:, 2], "k-", lw=1.5, label="ground truth")
    ax.plot(est[:, 0], est[:, 2], "r-", lw=1.0, label="estimated")
    ax.plot(est[:1, 0], est[:1, 2], "ko", ms=4, label="start")
    ax.set_xlabel("x [m] (right of the first camera)")
    ax.set_ylabel("z [m] (ahead of the first camera)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
