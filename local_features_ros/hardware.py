"""The default method for the hardware found: ``method: auto``.

Why: the node exists to feed visual odometry, which needs every frame at camera rate. The most
accurate method that keeps that rate differs by hardware. On a CUDA GPU, ALIKED runs at camera
rate and is the most accurate licence-clean method evaluated (``docs/evaluation.md``). On a CPU
it does not (2-4 Hz at 640x480 on two cores, ``docs/benchmarks.md``) while XFeat does, at
accuracy above ORB's; ORB is the fallback when the released XFeat weights are not installed. An
explicit ``method`` always wins; ``auto`` is resolved once, at startup, and the choice is logged
with its reason.

The same goes for the CPU threads of a pipelined node (``extraction_threads``): the network gets
all cores but one, which stays for the stage that matches and verifies the previous frame and for
the ROS executor. On two cores that is one thread each, and the stages overlap instead of
slowing each other down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["AUTO_METHOD", "DefaultChoice", "ThreadChoice", "choose_method", "cpu_cores",
           "cuda_available", "extraction_threads"]

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


@dataclass(frozen=True)
class ThreadChoice:
    """Torch CPU threads for a node's extraction stage, and why (one line for the log)."""

    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} ({self.reason})"


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or ``taskset``'s
    limit), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def extraction_threads(environ: dict[str, str] | None = None, cores: int | None = None
                       ) -> ThreadChoice:
    """Threads for the extraction stage of a node that matches the previous frame in a second
    stage: ``OMP_NUM_THREADS`` when set (the user's choice wins), else all cores but one.

    Why not all cores: the matching stage and the executor then preempt the network's threads
    in the middle of its parallel regions, and every such region waits for its slowest thread.
    On two cores the node measured ~10 % more frames per second with one extraction thread than
    with two (docs/benchmarks.md, "The node's rate")."""
    env = os.environ if environ is None else environ
    value = str(env.get("OMP_NUM_THREADS", "")).strip()
    if value:
        try:
            return ThreadChoice(max(1, int(value)), f"OMP_NUM_THREADS={value}")
        except ValueError:
            pass  # not a number: OpenMP ignores it too
    n = cpu_cores() if cores is None else max(1, int(cores))
    if n == 1:
        return ThreadChoice(1, "1 core")
    return ThreadChoice(n - 1, f"{n} cores: one is kept for matching and the executor")
