"""The default method for the hardware found: ``method: auto``.

Why: the node exists to feed visual odometry, which needs every frame at camera rate. The most
accurate method that keeps that rate differs by hardware. On a CUDA GPU, ALIKED runs at camera
rate and is the most accurate licence-clean method evaluated (``docs/evaluation.md``). On a CPU
it does not (2-4 Hz at 640x480 on two cores, ``docs/benchmarks.md``) while XFeat does, at
accuracy above ORB's; ORB is the fallback when the released XFeat weights are not installed. An
explicit ``method`` always wins; ``auto`` is resolved once, at startup, and the choice is logged
with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AUTO_METHOD", "DefaultChoice", "choose_method", "cuda_available"]

#: The ``method`` value that asks for this choice.
AUTO_METHOD = "auto"

#: Preference per device kind, best first. A learned method is taken only when its weights are
#: installed (nothing is downloaded); ORB needs none.
CUDA_PREFERENCE = ("aliked", "xfeat", "orb")
CPU_PREFERENCE = ("xfeat", "orb")

_WHY = {
    ("cuda", "aliked"): "a CUDA device is present: ALIKED, the most accurate method evaluated, "
                        "runs at camera rate there",
    ("cpu", "xfeat"): "no CUDA device: XFeat runs at camera rate on a CPU (ALIKED does not) and "
                      "is more accurate than ORB",
}


@dataclass(frozen=True)
class DefaultChoice:
    """The method ``auto`` stands for here, and why (one line for the log)."""

    method: str
    reason: str


def cuda_available(device: str = "auto") -> bool:
    """Whether ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) will run on a CUDA GPU."""
    if str(device).strip().lower() == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _usable(method: str) -> str | None:
    """None when ``method`` can run with what is installed, else why not."""
    from .registry import get_extractor_class

    try:
        cls = get_extractor_class(method, runtime=True)
    except Exception as exc:  # noqa: BLE001 - a missing optional method is only a skipped choice
        return str(exc)
    if cls.is_learned and cls.default_weights({}) is None:
        return f"the released {method} weights are not installed ({cls.weights_note})"
    return None


def choose_method(device: str = "auto") -> DefaultChoice:
    """The most accurate method at camera rate for ``device`` whose weights are installed."""
    kind = "cuda" if cuda_available(device) else "cpu"
    skipped: list[str] = []
    for method in CUDA_PREFERENCE if kind == "cuda" else CPU_PREFERENCE:
        problem = _usable(method)
        if problem is None:
            why = _WHY.get((kind, method)) or (
                f"{'a CUDA device is present' if kind == 'cuda' else 'no CUDA device'}: "
                f"{method}, the best method installed here ({'; '.join(skipped)})")
            return DefaultChoice(method, why)
        skipped.append(problem)
    return DefaultChoice("orb", "no learned method's weights are installed: " + "; ".join(skipped))
