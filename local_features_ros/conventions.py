"""Names every layer shares, in a module that imports nothing heavy (no torch, no ROS).

Why: the node, the CLI, the extractors and training all raise the same configuration error and
accept the same precision names; defining them once here lets torch-free code (training's config
loader, the launch file's helpers) use them without importing a model.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DEFAULT_METHOD", "PRECISIONS"]

#: the node's (and ``config/extractor.yaml``'s) method when none is given: ``auto``, the most
#: accurate method that runs at camera rate on the hardware found (``hardware.py``: ALIKED on a
#: CUDA GPU, XFeat on a CPU, ORB when no learned weights are installed). Resolved once at
#: startup; the node, ``run``, ``demo`` and the launch file log what was chosen and why.
DEFAULT_METHOD = "auto"

#: ``precision`` values of extractors, matchers and the node (``auto``: fp16 on CUDA, bf16 on
#: CPUs with native bf16, else fp32). Training accepts these less ``fp16`` (no loss scaling).
PRECISIONS = ("fp32", "fp16", "bf16", "auto")

#: Images with more pixels than this are rejected before decoding (an 8k frame would stall a
#: node's worker for seconds and is almost always a misconfigured driver); both nodes' default.
DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096


class ConfigError(ValueError):
    """Unknown key, malformed value or out-of-range setting in a config (extractor, matcher,
    node parameter, training YAML); the message names the key and what is accepted."""
