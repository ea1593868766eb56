"""Settings of the odometry, one frozen dataclass per stage, validated when built.

Why frozen and split by stage: a ROS node (or the CLI) builds one ``OdometryConfig`` up front and
every stage reads only its own section; a bad value fails at construction with the field's name,
never in the middle of a sequence. Defaults are the values measured in ``docs/odometry.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..conventions import ConfigError

__all__ = ["StereoConfig", "DepthConfig", "TrackingConfig", "KeyframeConfig", "BundleConfig",
           "RecoveryConfig", "OdometryConfig", "DEFAULT_MAX_KEYPOINTS"]

#: ``max_keypoints`` that ``evaluate odometry`` gives a method unless ``--set`` says otherwise.
#: On the KITTI snippet (docs/odometry.md) XFeat's end drift stays within 1.05-1.17 % from 1000
#: to 3000 keypoints and its rate barely moves (the network, not the count, dominates); at 1000
#: the map is thin and twice as many keyframes (bundle adjustments) are needed, at 3000 stereo
#: and tracking cost ~30 ms more; 2000 is about what a node extracts (XFeat's node setting).
DEFAULT_MAX_KEYPOINTS = 2000


def _check(ok: bool, text: str) -> None:
    if not ok:
        raise ConfigError(text)


@dataclass(frozen=True)
class StereoConfig:
    """Left/right matching of a rectified pair.

    Candidates of a left keypoint are the right keypoints within ``max_row_diff`` rows and at a
    disparity in ``[min_disparity, max_disparity]`` (0 = half the image width); among them the
    mutual nearest descriptor wins if it passes Lowe's ``ratio``. ``subpixel`` refines the
    disparity by normalised cross-correlation of a ``(2 patch_radius + 1)^2`` patch over
    ``+-search_radius`` px along the row (parabola through the best three scores); a match whose
    best correlation is below ``min_zncc`` or at the end of the search range is dropped."""

    max_row_diff: float = 2.0
    min_disparity: float = 1.0
    max_disparity: float = 0.0
    ratio: float = 0.9
    subpixel: bool = True
    patch_radius: int = 4
    search_radius: int = 3
    min_zncc: float = 0.7

    def __post_init__(self) -> None:
        _check(0 < self.max_row_diff <= 8, "stereo.max_row_diff must be in (0, 8] px")
        _check(self.min_disparity > 0, "stereo.min_disparity must be > 0 px (positive disparity)")
        _check(self.max_disparity == 0 or self.max_disparity > self.min_disparity,
               "stereo.max_disparity must be 0 (half the width) or > min_disparity")
        _check(0 < self.ratio <= 1, "stereo.ratio must be in (0, 1] (1 = off)")
        _check(1 <= self.patch_radius <= 10, "stereo.patch_radius must be in [1, 10]")
        _check(1 <= self.search_radius <= 10, "stereo.search_radius must be in [1, 10]")
        _check(-1 <= self.min_zncc < 1, "stereo.min_zncc must be in [-1, 1)")


@dataclass(frozen=True)
class DepthConfig:
    """Depth images aligned to the colour image. Depths outside ``[min_depth, max_depth]`` m,
    NaN, inf or 0 are 'no depth'; so is a pixel whose 3x3 neighbourhood spans more than
    ``max_step`` (relative) - an object edge, where the keypoint may sit on either surface.
    ``virtual_baseline`` (m) turns depth into a right-image column for the stereo factors."""

    min_depth: float = 0.1
    max_depth: float = 10.0
    max_step: float = 0.05
    virtual_baseline: float = 0.08

    def __post_init__(self) -> None:
        _check(0 < self.min_depth < self.max_depth, "depth: need 0 < min_depth < max_depth")
        _check(self.max_step > 0, "depth.max_step must be > 0")
        _check(self.virtual_baseline > 0, "depth.virtual_baseline must be > 0 m")


@dataclass(frozen=True)
class TrackingConfig:
    """Frame-to-map tracking: map points projected with the constant-velocity prediction are
    matched to keypoints within ``search_radius`` px (then ``wide_radius``, then anywhere when
    too few matches), and the pose is solved by PnP RANSAC (``ransac_threshold`` px) and refined
    on the inliers. Fewer than ``min_inliers`` inliers = tracking lost. ``max_depth_baselines``:
    stereo points farther than this many baselines are not added to the map (their depth is
    mostly noise; 0 = keep all)."""

    search_radius: float = 15.0
    wide_radius: float = 60.0
    ratio: float = 0.9
    ransac_threshold: float = 3.0
    ransac_iterations: int = 200
    confidence: float = 0.999
    min_matches: int = 40
    min_inliers: int = 20
    max_depth_baselines: float = 120.0

    def __post_init__(self) -> None:
        _check(0 < self.search_radius <= self.wide_radius,
               "tracking: need 0 < search_radius <= wide_radius")
        _check(0 < self.ratio <= 1, "tracking.ratio must be in (0, 1]")
        _check(self.ransac_threshold > 0, "tracking.ransac_threshold must be > 0 px")
        _check(self.ransac_iterations >= 10, "tracking.ransac_iterations must be >= 10")
        _check(0 < self.confidence < 1, "tracking.confidence must be in (0, 1)")
        _check(self.min_inliers >= 6, "tracking.min_inliers must be >= 6")
        _check(self.min_matches >= self.min_inliers, "tracking.min_matches must be >= min_inliers")
        _check(self.max_depth_baselines >= 0, "tracking.max_depth_baselines must be >= 0")


@dataclass(frozen=True)
class KeyframeConfig:
    """A frame becomes a keyframe when it tracks fewer than ``min_tracked`` map points, or fewer
    than ``tracked_ratio`` of the points the last keyframe tracked, or ``max_frames`` frames
    passed, or it turned more than ``max_rotation_deg`` from the last keyframe."""

    min_tracked: int = 150
    tracked_ratio: float = 0.8
    max_frames: int = 10
    max_rotation_deg: float = 10.0

    def __post_init__(self) -> None:
        _check(self.min_tracked >= 0, "keyframes.min_tracked must be >= 0")
        _check(0 < self.tracked_ratio <= 1, "keyframes.tracked_ratio must be in (0, 1]")
        _check(self.max_frames >= 1, "keyframes.max_frames must be >= 1")
        _check(self.max_rotation_deg > 0, "keyframes.max_rotation_deg must be > 0")


@dataclass(frozen=True)
class BundleConfig:
    """Sliding-window bundle adjustment (gtsam) run at every keyframe over the last ``window``
    keyframes; the oldest of them is held fixed. Observations have ``pixel_sigma`` px noise
    (times the keypoint's scale) under a Huber loss with threshold ``huber_k`` sigmas; after the
    optimisation an observation whose normalised squared error exceeds the 95 % chi-square bound
    (3 dof stereo, 2 dof mono) is removed. ``covariance``: compute the marginal covariance of the
    newest keyframe pose (``OdometryResult.covariance``). ``max_landmarks`` (0 = all) caps the
    landmarks optimised, the longest-observed first: gtsam's elimination costs ~15 us per
    landmark and iteration, so the cap bounds the time per keyframe. ``enabled`` False skips
    bundle adjustment (ablation)."""

    enabled: bool = True
    window: int = 6
    iterations: int = 10
    max_landmarks: int = 800
    pixel_sigma: float = 1.0
    huber_k: float = 2.0
    covariance: bool = True

    def __post_init__(self) -> None:
        _check(self.window >= 2, "bundle.window must be >= 2 keyframes")
        _check(self.max_landmarks >= 0, "bundle.max_landmarks must be >= 0 (0 = all)")
        _check(self.iterations >= 1, "bundle.iterations must be >= 1")
        _check(self.pixel_sigma > 0, "bundle.pixel_sigma must be > 0 px")
        _check(self.huber_k > 0, "bundle.huber_k must be > 0")


@dataclass(frozen=True)
class RecoveryConfig:
    """After a lost frame: first try to ``relocalise`` against the current map (matching without
    a motion prior); otherwise start a new map at the first frame with ``min_init_points``
    measured 3D points, anchored at the last good pose so the trajectory stays continuous."""

    relocalise: bool = True
    min_init_points: int = 50

    def __post_init__(self) -> None:
        _check(self.min_init_points >= 6, "recovery.min_init_points must be >= 6")


@dataclass(frozen=True)
class OdometryConfig:
    stereo: StereoConfig = field(default_factory=StereoConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def replace(self, **changes: Any) -> "OdometryConfig":
        """A copy with dotted changes applied, e.g. ``replace(**{"bundle.window": 8})``;
        values are validated by the section's dataclass (``ConfigError`` naming the key)."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            section, _, name = key.partition(".")
            if not name or section not in {f.name for f in dataclasses.fields(self)}:
                raise ConfigError(f"unknown odometry setting '{key}' (sections: "
                                  + ", ".join(f.name for f in dataclasses.fields(self)) + ")")
            sections.setdefault(section, {})[name] = value
        out: dict[str, Any] = {}
        for section, values in sections.items():
            current = getattr(self, section)
            known = {f.name: f for f in dataclasses.fields(current)}
            for name, value in values.items():
                if name not in known:
                    raise ConfigError(f"unknown odometry setting '{section}.{name}' (known: "
                                      + ", ".join(sorted(known)) + ")")
                values[name] = _cast(f"{section}.{name}", value, getattr(current, name))
            try:
                out[section] = dataclasses.replace(current, **values)
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc)) from exc
        return dataclasses.replace(self, **out)


def _cast(name: str, value: Any, current: Any) -> Any:
    """A command-line string to the type of the field it replaces."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return type(current)(value)
    except ValueError:
        raise ConfigError(f"odometry setting '{name}' takes a {type(current).__name__}, got "
                          f"'{value}'") from None
