"""Approximate-time pairing of two image streams (stereo left/right, colour/depth), ROS-free.

Why here and not ``message_filters``: it is not on PyPI, and the odometry node needs to know
which messages were left without a partner (they are acknowledged as dropped, so a replaying
source never waits for them). Each side keeps a short FIFO; a pair is the oldest message of one
side with the message of the other side closest in time, when the two stamps differ by at most
``slop`` seconds. Anything older than a formed pair can never be paired any more and is dropped.
Messages are opaque here; ``stamp_of`` reads their time in seconds.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Pair", "PairQueue"]


@dataclass
class Pair:
    first: Any
    second: Any
    stamp: float  # the first message's stamp


@dataclass
class PairQueue:
    """``push(side, msg)`` returns the pairs it completes and the messages it made unpairable."""

    stamp_of: Callable[[Any], float]
    slop: float = 0.02
    depth: int = 10
    _sides: tuple[collections.deque, collections.deque] = field(
        default_factory=lambda: (collections.deque(), collections.deque()))
    _last_paired: float = float("-inf")

    def push(self, side: int, msg: Any) -> tuple[list[Pair], list[Any]]:
        """Add ``msg`` to ``side`` (0 = first stream, 1 = second)."""
        if side not in (0, 1):
            raise ValueError(f"side must be 0 or 1, got {side}")
        dropped: list[Any] = []
        queue = self._sides[side]
        t = self.stamp_of(msg)
        if t <= self._last_paired or (queue and t < self.stamp_of(queue[-1])):
            return [], [msg]  # out of order: it could only be paired with the past
        queue.append(msg)
        while len(queue) > self.depth:  # the other side stopped: keep memory bounded
            dropped.append(queue.popleft())
        pairs = []
        while True:
            pair = self._pair_oldest(dropped)
            if pair is None:
                break
            pairs.append(pair)
        return pairs, dropped

    def _pair_oldest(self, dropped: list[Any]) -> Pair | None:
        a, b = self._sides
        if not a or not b:
            return None
        ta, tb = self.stamp_of(a[0]), self.stamp_of(b[0])
        # The older head can only pair with the other side's messages up to ``slop`` later.
        old, new, t_old = (a, b, ta) if ta <= tb else (b, a, tb)
        best, best_dt = None, None
        for i, m in enumerate(new):
            dt = abs(self.stamp_of(m) - t_old)
            if dt <= self.slop and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
            if self.stamp_of(m) - t_old > self.slop:
                break
        if best is None:
            if self.stamp_of(new[-1]) - t_old > self.slop:
                dropped.append(old.popleft())  # newer messages exist: this one is orphaned
                return self._pair_oldest(dropped)
            return None  # its partner may still arrive
        for _ in range(best):
            dropped.append(new.popleft())
        first, second = (old.popleft(), new.popleft()) if old is a else \
            (new.popleft(), old.popleft())
        self._last_paired = max(self.stamp_of(first), self.stamp_of(second))
        return Pair(first, second, self.stamp_of(first))

    def clear(self) -> list[Any]:
        """Forget everything; returns the messages that were waiting."""
        out = list(self._sides[0]) + list(self._sides[1])
        for q in self._sides:
            q.clear()
        return out
