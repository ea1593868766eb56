"""Wall-clock budgets of training stages: a deadline plus estimates of what is still to come.

Why predictive: a stage that only checks "am I past the budget?" after a step overruns by one
step, by its validation and by everything it does after the loop (final checkpoint, export,
export check); with slow steps (a 7 s MagicPoint step on a CPU, a 20 s Homographic Adaptation
image) that is most of a short budget. Each stage here starts its clock when it starts (setup
counted), measures what its steps and its finishing work cost, and only starts the next unit of
work when that unit *and* the finishing work still fit.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class Deadline:
    """``seconds`` of wall time from ``start`` (default: now); ``seconds <= 0`` = no budget.

    ``clock`` is ``time.monotonic`` (a budget must not jump with the system clock)."""

    def __init__(self, seconds: float, start: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds = float(seconds or 0.0)
        self.clock = clock
        self.start = clock() if start is None else float(start)

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left (``inf`` without a budget; negative once overrun)."""
        return self.seconds - self.elapsed() if self.enabled else float("inf")

    def fits(self, cost_s: float) -> bool:
        """Whether work estimated at ``cost_s`` seconds ends within the budget."""
        return not self.enabled or self.elapsed() + max(float(cost_s), 0.0) <= self.seconds


class RecentMax:
    """The largest of the last ``window`` durations: a step's cost estimate that follows slow
    phases (data-loader warm-up, periodic checkpoints) without being stuck on a one-off."""

    def __init__(self, window: int = 5, default: float = 0.0):
        self._values: deque[float] = deque(maxlen=max(int(window), 1))
        self.default = float(default)

    def add(self, seconds: float) -> None:
        self._values.append(max(float(seconds), 0.0))

    def __len__(self) -> int:
        return len(self._values)

    @property
    def value(self) -> float:
        return max(self._values) if self._values else self.default
