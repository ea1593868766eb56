"""Persistent track ids: a keypoint matched to the previous frame inherits that keypoint's id.

Why ids and not chains of matches: a consumer of ``~/features`` (a VO back-end, a visualiser)
wants to know which keypoints are the same scene point over many frames without replaying
every match set. Ids are uint32, monotonic and never reused (also across ``reset``), so a stale
id can never be confused with a new track.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TrackManager"]

_UINT32_MAX = np.iinfo(np.uint32).max


class TrackManager:
    """Assigns track ids frame by frame (call ``update`` once per processed frame)."""

    def __init__(self) -> None:
        self._next_id = 0
        self._prev_ids: np.ndarray | None = None

    @property
    def next_id(self) -> int:
        return self._next_id

    def reset(self) -> None:
        """Forget the previous frame (all keypoints of the next frame start new tracks). The id
        counter keeps running so ids stay unique for the life of the manager."""
        self._prev_ids = None

    def update(self, num_features: int, matches: np.ndarray | None = None) -> np.ndarray:
        """Ids for the ``num_features`` keypoints of the new frame.

        ``matches`` ``(M, 2)`` ``[prev_idx, cur_idx]``: inlier matches to the previous frame
        (ignored on the first frame). A current keypoint listed twice keeps the first match;
        a previous keypoint matched twice gives its id to the first one only (ids stay unique
        within a frame).
        """
        n = int(num_features)
        if n < 0:
            raise ValueError("num_features must be >= 0")
        ids = np.full(n, _UINT32_MAX, dtype=np.uint32)
        assigned = np.zeros(n, bool)
        if self._prev_ids is not None and matches is not None and len(matches):
            m = np.asarray(matches, np.int64).reshape(-1, 2)
            ok = (m[:, 0] >= 0) & (m[:, 0] < len(self._prev_ids)) & (m[:, 1] >= 0) & (m[:, 1] < n)
            if not ok.all():
                logger.warning("ignoring %d matches with out-of-range indices", int((~ok).sum()))
            m = m[ok]
            _, first_cur = np.unique(m[:, 1], return_index=True)
            m = m[np.sort(first_cur)]
            _, first_prev = np.unique(m[:, 0], return_index=True)
            m = m[np.sort(first_prev)]
            ids[m[:, 1]] = self._prev_ids[m[:, 0]]
            assigned[m[:, 1]] = True
        n_new = int((~assigned).sum())
        if self._next_id + n_new > _UINT32_MAX:
            raise OverflowError("track ids exhausted the uint32 range")
        ids[~assigned] = np.arange(self._next_id, self._next_id + n_new, dtype=np.uint32)
        self._next_id += n_new
        self._prev_ids = ids
        return ids.copy()
