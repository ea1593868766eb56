"""Debug overlay: keypoints and frame-to-frame match tracks drawn on the input image.

Why in the core (no rclpy): the node, the demo and offline tools draw the same picture, and the
drawing is testable without ROS. Output is always ``bgr8`` (what rviz's Image display and
``cv2.imwrite`` expect).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: BGR colours (inlier green, outlier red, keypoint yellow->orange by score).
INLIER_BGR = (0, 220, 0)
OUTLIER_BGR = (0, 0, 230)
TEXT_BGR = (255, 255, 255)


@dataclass
class OverlayInfo:
    """What the overlay's header line shows (None / empty = not shown).

    ``matcher`` names the frame-to-frame matcher that produced the matches (``nn``,
    ``lightglue``); the header then reads ``<method> + <matcher>``, e.g. ``aliked + lightglue``,
    so a saved overlay says which pipeline drew it.
    """

    method: str = ""
    latency_ms: float | None = None
    num_matches: int | None = None
    num_inliers: int | None = None
    matcher: str = ""


def overlay_title(method: str, matcher: str = "") -> str:
    """``'aliked', 'lightglue'`` -> ``'aliked + lightglue'``; either part may be empty."""
    return " + ".join(p for p in (method.strip(), matcher.strip()) if p)


def to_display_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray/RGB; uint8, uint16 or float) -> contiguous bgr8 for drawing.

    Float and 16-bit images are min/max stretched over their finite values (like cv_bridge's
    ``cvtColorForDisplay``), NaN/inf become black.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        finite = np.isfinite(f)
        if finite.any():
            lo, hi = float(f[finite].min()), float(f[finite].max())
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            f = np.where(finite, (f - lo) * scale, 0.0)
        else:
            f = np.zeros_like(f)
        img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    # RGB -> BGR in OpenCV: numpy's copy of the channel-reversed view is ~15x slower (1.5 ms
    # at 640x480, every overlay frame)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)


def _score_colours(scores: np.ndarray) -> np.ndarray:
    """Scores -> BGR colours (low = yellow, high = orange-red) by rank, robust to any scale."""
    n = len(scores)
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    rank = np.empty(n, np.float64)
    rank[np.argsort(scores, kind="stable")] = np.arange(n) / max(n - 1, 1)
    green = (230 - 180 * rank).astype(np.int64)
    return np.stack([np.zeros(n, np.int64), green, np.full(n, 255)], axis=1).astype(np.uint8)


def draw_overlay(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None,
                 prev_keypoints: np.ndarray | None = None, matches: np.ndarray | None = None,
                 inliers: np.ndarray | None = None, info: OverlayInfo | None = None,
                 max_drawn: int = 2000) -> np.ndarray:
    """Draw keypoints (``(N, 2)`` [x, y], original pixels) and match tracks.

    ``matches`` ``(M, 2)`` holds ``[i_prev, i_cur]`` indices into ``prev_keypoints`` and
    ``keypoints``; each inlier match is a green line from the previous position to the current one;
    outliers are red ticks at the current keypoint. Returns a new ``(H, W, 3)`` uint8 BGR image.
    """
    canvas = to_display_bgr(image).copy()
    h, w = canvas.shape[:2]
    kpts = np.asarray(keypoints, np.float64).reshape(-1, 2)[:max_drawn]
    radius = max(1, int(round(min(h, w) / 160)))
    # Fixed-point drawing (shift=4) keeps the sub-pixel positions of the keypoints.
    shift, mul = 4, 16.0
    if matches is not None and prev_keypoints is not None and len(matches):
        prev = np.asarray(prev_keypoints, np.float64).reshape(-1, 2)
        cur = np.asarray(keypoints, np.float64).reshape(-1, 2)
        m = np.asarray(matches, np.int64).reshape(-1, 2)[:max_drawn]
        inl = (np.ones(len(m), bool) if inliers is None
               else np.asarray(inliers, bool).reshape(-1)[:len(m)])
        if len(inl) < len(m):  # fewer flags than matches: treat the rest as outliers
            inl = np.concatenate([inl, np.zeros(len(m) - len(inl), bool)])
        valid = (m[:, 0] >= 0) & (m[:, 0] < len(prev)) & (m[:, 1] >= 0) & (m[:, 1] < len(cur))
        m, inl = m[valid], inl[valid]
        # Inliers as flow lines (previous -> current); outliers only as a short red tick at the
        # current keypoint: long outlier lines across the image hide the tracks that matter.
        segs = np.stack([prev[m[inl, 0]], cur[m[inl, 1]]], axis=1)  # (M, 2, 2)
        if len(segs):  # one polylines call instead of one call per match
            cv2.polylines(canvas, list(np.rint(segs * mul).astype(np.int32)), False, INLIER_BGR,
                          1, cv2.LINE_AA, shift)
        out = cur[m[~inl, 1]]
        if len(out):
            ticks = np.stack([out - [radius, radius], out + [radius, radius]], axis=1)
            cv2.polylines(canvas, list(np.rint(ticks * mul).astype(np.int32)), False,
                          OUTLIER_BGR, 1, cv2.LINE_AA, shift)
    colours = _score_colours(np.asarray(scores, np.float64).reshape(-1)[:len(kpts)]
                             if scores is not None else np.zeros(len(kpts)))
    centres = np.rint(kpts * mul).astype(np.int64).tolist()
    for (x, y), c in zip(centres, colours.tolist()):
        cv2.circle(canvas, (x, y), int(radius * mul), c, 1, cv2.LINE_8, shift)
    if info is not None and h >= 24 and w >= 64:
        title = overlay_title(info.method, info.matcher)
        parts = [title] if title else []
        parts.append(f"kpts {len(keypoints)}")
        if info.num_matches is not None:
            parts.append(f"matches {info.num_matches}")
        if info.num_inliers is not None:
            parts.append(f"inliers {info.num_inliers}")
        if info.latency_ms is not None:
            parts.append(f"{info.latency_ms:.0f} ms")
        text = "  ".join(parts)
        scale = max(0.3, min(h, w) / 600.0)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if tw > w - 8:  # shrink to fit the width
            scale = max(0.25, scale * (w - 8) / tw)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(canvas, (0, 0), (min(w - 1, tw + 8), th + 10), (0, 0, 0), -1)
        cv2.putText(canvas, text, (4, 4 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_BGR, 1,
                    cv2.LINE_AA)
        if h >= LEGEND_MIN_SIZE[1] and w >= LEGEND_MIN_SIZE[0]:
            draw_legend(canvas, scale)
    return canvas


#: Smallest (width, height) that gets the legend (below it the legend would hide the image).
LEGEND_MIN_SIZE = (200, 120)
LEGEND_LINES = (
    ("inlier: track prev -> current", "line", INLIER_BGR),
    ("outlier (rejected by RANSAC)", "tick", OUTLIER_BGR),
    ("keypoint: yellow low .. red high score", "circle", (0, 140, 255)),
    ("top: method + matcher | kpts | matches to prev | inliers | latency", "text", TEXT_BGR),
)


def draw_legend(canvas: np.ndarray, scale: float) -> None:
    """What the colours and the header numbers mean, in the bottom-left corner (in place).

    Why: someone opening the overlay in rviz for the first time cannot know that red ticks are
    RANSAC outliers or that the header counts matches against the previous frame.
    """
    h, w = canvas.shape[:2]
    s = max(0.25, scale * 0.6)
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, s, 1)
    row = th + 6
    widths = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, s, 1)[0][0] for t, _, _ in LEGEND_LINES]
    box_w = min(w - 1, max(widths) + 30)
    y0 = h - 1 - row * len(LEGEND_LINES) - 4
    cv2.rectangle(canvas, (0, y0), (box_w, h - 1), (0, 0, 0), -1)
    for i, (text, kind, bgr) in enumerate(LEGEND_LINES):
        yc = y0 + 4 + row * i + row // 2
        if kind == "line":
            cv2.line(canvas, (4, yc), (20, yc), bgr, 2, cv2.LINE_AA)
        elif kind == "tick":
            cv2.line(canvas, (9, yc - 4), (15, yc + 4), bgr, 2, cv2.LINE_AA)
        elif kind == "circle":
            cv2.circle(canvas, (12, yc), 4, bgr, 1, cv2.LINE_AA)
        cv2.putText(canvas, text, (26, yc + th // 2), cv2.FONT_HERSHEY_SIMPLEX, s, TEXT_BGR, 1,
                    cv2.LINE_AA)
