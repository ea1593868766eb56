"""The node's hand-over of image messages from the subscription callback to its worker thread.

Live (``every_frame`` false) there is one latest-frame slot: a message that is overwritten
before the worker takes it is dropped, so outputs never lag behind the camera by a queue of stale
frames. With ``every_frame`` (bag replay) messages wait in a bounded FIFO; a callback facing a
full queue waits up to ``put_timeout_s`` for space, then drops the newest message. Every drop
calls ``on_dropped(message)`` (the node acknowledges it as dropped). No ROS types: messages are
opaque objects here.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

#: How long ``put`` waits for queue space (``every_frame``) before dropping the message.
QUEUE_PUT_TIMEOUT_S = 1.0


class FrameInbox:
    def __init__(self, on_dropped: Callable[[Any], None],
                 put_timeout_s: float = QUEUE_PUT_TIMEOUT_S) -> None:
        self._on_dropped = on_dropped
        self._put_timeout_s = float(put_timeout_s)
        self._cv = threading.Condition()
        self._slot: Any = None
        self._queue: collections.deque = collections.deque()
        self._stop = False

    @property
    def stopped(self) -> bool:
        return self._stop

    def put(self, msg: Any, every_frame: bool, limit: int) -> None:
        """Called by the subscription callback (``limit`` = FIFO length when ``every_frame``)."""
        with self._cv:
            if every_frame:
                deadline = time.monotonic() + self._put_timeout_s
                while len(self._queue) >= limit and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if len(self._queue) >= limit:
                    self._on_dropped(msg)
                else:
                    self._queue.append(msg)
            else:
                if self._slot is not None:
                    self._on_dropped(self._slot)
                self._slot = msg
            self._cv.notify_all()

    def get(self) -> Any:
        """Called by the worker: the next message (FIFO first, then the slot); blocks until
        there is one; None once ``stop`` was called."""
        with self._cv:
            while not self._stop and not self._queue and self._slot is None:
                self._cv.wait(0.5)
            if self._stop:
                return None
            if self._queue:
                msg = self._queue.popleft()
            else:
                msg, self._slot = self._slot, None
            self._cv.notify_all()  # queue space for a waiting callback
            return msg

    def wake(self) -> None:
        """Wake waiting callbacks and the worker (e.g. ``every_frame`` changed)."""
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
