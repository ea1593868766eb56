"""Overlay drawing: inlier tracks as green lines, outliers as red ticks, keypoints circled."""

from __future__ import annotations

import numpy as np

from local_features_ros.overlay import (INLIER_BGR, OUTLIER_BGR, OverlayInfo, draw_overlay,
                                        overlay_title)


def _near(canvas: np.ndarray, x: int, y: int, bgr: tuple[int, int, int], r: int = 1) -> bool:
    patch = canvas[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - np.array(bgr)).sum(1) < 120).any())


def test_inlier_line_and_outlier_tick():
    img = np.full((120, 160), 128, np.uint8)
    prev = np.array([[20.0, 20.0], [20.0, 100.0]])
    cur = np.array([[100.0, 20.0], [100.0, 100.0]])
    matches = np.array([[0, 0], [1, 1]])
    out = draw_overlay(img, cur, np.array([1.0, 0.5]), prev, matches, np.array([True, False]),
                       OverlayInfo("orb", 12.0, 2, 1))
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8
    assert _near(out, 60, 20, INLIER_BGR)  # middle of the inlier track
    assert not _near(out, 60, 100, OUTLIER_BGR, r=2)  # no line for the outlier
    assert _near(out, 100 + 2, 100 + 2, OUTLIER_BGR, r=1)  # tick at the current keypoint
    assert (out[:12, :40] == 0).sum() > 0  # text box drawn in the corner


def test_empty_and_float_inputs():
    depth = np.full((40, 60), np.nan, np.float32)
    depth[10:20, 10:20] = 2.0
    out = draw_overlay(depth, np.zeros((0, 2)))
    assert out.shape == (40, 60, 3) and out[0, 0].sum() == 0


def test_legend_in_the_bottom_left_corner():
    img = np.full((240, 320), 128, np.uint8)
    out = draw_overlay(img, np.array([[160.0, 60.0]]), np.array([1.0]), info=OverlayInfo("orb"))
    corner = out[150:, :200]
    assert (corner == 0).all(axis=2).sum() > 1000  # the black legend box
    assert any(_near(corner, x, y, INLIER_BGR) for y in range(0, 90, 3) for x in (8, 12, 16))
    assert any(_near(corner, x, y, OUTLIER_BGR) for y in range(0, 90, 3) for x in (10, 12, 14))
    bare = draw_overlay(img, np.array([[160.0, 60.0]]), np.array([1.0]))  # no info: no legend
    assert (bare[150:, :200] == 128).all()
    small = draw_overlay(np.full((60, 80), 128, np.uint8), np.zeros((0, 2)), info=OverlayInfo("orb"))
    assert (small[40:, :] == 128).all()  # too small for a legend


def _header_width(canvas: np.ndarray) -> int:
    """Width of the black header box in the top-left corner (row 2 of the image)."""
    row = (canvas[2] == 0).all(axis=1)
    return int(np.argmin(row)) if not row.all() else len(row)


def test_header_names_the_matcher():
    assert overlay_title("aliked", "lightglue") == "aliked + lightglue"
    assert overlay_title("orb", "nn") == "orb + nn"
    assert overlay_title("orb") == "orb" and overlay_title("", "nn") == "nn"
    img = np.full((240, 320), 128, np.uint8)
    kpts, scores = np.array([[160.0, 120.0]]), np.array([1.0])

    def draw(info: OverlayInfo) -> np.ndarray:
        return draw_overlay(img, kpts, scores, info=info)

    with_matcher = draw(OverlayInfo("aliked", 12.0, 5, 3, matcher="lightglue"))
    # The header is exactly the text "aliked + lightglue  kpts 1  ...": same pixels as that title.
    assert np.array_equal(with_matcher, draw(OverlayInfo("aliked + lightglue", 12.0, 5, 3)))
    method_only = draw(OverlayInfo("aliked", 12.0, 5, 3))
    assert not np.array_equal(with_matcher, method_only)
    assert _header_width(with_matcher) > _header_width(method_only) > 0
    # Another matcher, another header.
    assert not np.array_equal(with_matcher, draw(OverlayInfo("aliked", 12.0, 5, 3, matcher="nn")))
