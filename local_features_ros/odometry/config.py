"""Settings of the odometry, one ``Config`` per stage, validated when built.

Why frozen and split by stage: a ROS node (or the CLI) builds one ``OdometryConfig`` up front and
every stage reads only its own section; a bad value fails at construction with the key's name,
never in the middle of a sequence. Values typed by people (``--odometry-set bundle.window=8``)
are cast by ``config.coerce`` like every other setting of the package. Defaults are the values
measured in ``docs/odometry.md``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, Mapping

from ..config import Config
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


class StereoConfig(Config):
    """Left/right matching of a rectified pair.

    Candidates of a left keypoint are the right keypoints within ``max_row_diff`` rows and at a
    disparity in ``[min_disparity, max_disparity]`` (0 = half the image width); among them the
    mutual nearest descriptor wins if it passes Lowe's ``ratio``. ``subpixel`` refines the
    disparity by normalised cross-correlation of a ``(2 patch_radius + 1)^2`` patch over
    ``+-search_radius`` px along the row (parabola through the best three scores); a match whose
    best correlation is below ``min_zncc`` or at the end of the search range is dropped."""

    owner: ClassVar[str] = "odometry stereo"

    max_row_diff: float = 2.0
    min_disparity: float = 1.0
    max_disparity: float = 0.0
    ratio: float = 0.9
    subpixel: bool = True
    patch_radius: int = 4
    search_radius: int = 3
    min_zncc: float = 0.7

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(0 < conf["max_row_diff"] <= 8, "stereo.max_row_diff must be in (0, 8] px")
        _check(conf["min_disparity"] > 0,
               "stereo.min_disparity must be > 0 px (positive disparity)")
        _check(conf["max_disparity"] == 0 or conf["max_disparity"] > conf["min_disparity"],
               "stereo.max_disparity must be 0 (half the width) or > min_disparity")
        _check(0 < conf["ratio"] <= 1, "stereo.ratio must be in (0, 1] (1 = off)")
        _check(1 <= conf["patch_radius"] <= 10, "stereo.patch_radius must be in [1, 10]")
        _check(1 <= conf["search_radius"] <= 10, "stereo.search_radius must be in [1, 10]")
        _check(-1 <= conf["min_zncc"] < 1, "stereo.min_zncc must be in [-1, 1)")


class DepthConfig(Config):
    """Depth images aligned to the colour image. Depths outside ``[min_depth, max_depth]`` m,
    NaN, inf or 0 are 'no depth'; so is a pixel whose 3x3 neighbourhood spans more than
    ``max_step`` (relative) - an object edge, where the keypoint may sit on either surface.
    ``virtual_baseline`` (m) turns depth into a right-image column for the stereo factors."""

    owner: ClassVar[str] = "odometry depth"

    min_depth: float = 0.1
    max_depth: float = 10.0
    max_step: float = 0.05
    virtual_baseline: float = 0.08

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(0 < conf["min_depth"] < conf["max_depth"], "depth: need 0 < min_depth < max_depth")
        _check(conf["max_step"] > 0, "depth.max_step must be > 0")
        _check(conf["virtual_baseline"] > 0, "depth.virtual_baseline must be > 0 m")


class TrackingConfig(Config):
    """Frame-to-map tracking: map points projected with the constant-velocity prediction are
    matched to keypoints within ``search_radius`` px (then ``wide_radius``, then anywhere when
    too few matches), and the pose is solved by PnP RANSAC (``ransac_threshold`` px) and refined
    on the inliers. Fewer than ``min_inliers`` inliers = tracking lost. ``max_depth_baselines``:
    stereo points farther than this many baselines are not added to the map (their depth is
    mostly noise; 0 = keep all)."""

    owner: ClassVar[str] = "odometry tracking"

    search_radius: float = 15.0
    wide_radius: float = 60.0
    ratio: float = 0.9
    ransac_threshold: float = 3.0
    ransac_iterations: int = 200
    confidence: float = 0.999
    min_matches: int = 40
    min_inliers: int = 20
    max_depth_baselines: float = 120.0

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(0 < conf["search_radius"] <= conf["wide_radius"],
               "tracking: need 0 < search_radius <= wide_radius")
        _check(0 < conf["ratio"] <= 1, "tracking.ratio must be in (0, 1]")
        _check(conf["ransac_threshold"] > 0, "tracking.ransac_threshold must be > 0 px")
        _check(conf["ransac_iterations"] >= 10, "tracking.ransac_iterations must be >= 10")
        _check(0 < conf["confidence"] < 1, "tracking.confidence must be in (0, 1)")
        _check(conf["min_inliers"] >= 6, "tracking.min_inliers must be >= 6")
        _check(conf["min_matches"] >= conf["min_inliers"],
               "tracking.min_matches must be >= min_inliers")
        _check(conf["max_depth_baselines"] >= 0, "tracking.max_depth_baselines must be >= 0")


class KeyframeConfig(Config):
    """A frame becomes a keyframe when it tracks fewer than ``min_tracked`` map points, or fewer
    than ``tracked_ratio`` of the points the last keyframe tracked, or ``max_frames`` frames
    passed, or it turned more than ``max_rotation_deg`` from the last keyframe."""

    owner: ClassVar[str] = "odometry keyframes"

    min_tracked: int = 150
    tracked_ratio: float = 0.8
    max_frames: int = 10
    max_rotation_deg: float = 10.0

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(conf["min_tracked"] >= 0, "keyframes.min_tracked must be >= 0")
        _check(0 < conf["tracked_ratio"] <= 1, "keyframes.tracked_ratio must be in (0, 1]")
        _check(conf["max_frames"] >= 1, "keyframes.max_frames must be >= 1")
        _check(conf["max_rotation_deg"] > 0, "keyframes.max_rotation_deg must be > 0")


class BundleConfig(Config):
    """Sliding-window bundle adjustment (gtsam) run at every keyframe over the last ``window``
    keyframes; the oldest of them is held fixed. Observations have ``pixel_sigma`` px noise
    (times the keypoint's scale) under a Huber loss with threshold ``huber_k`` sigmas; after the
    optimisation an observation whose normalised squared error exceeds the 95 % chi-square bound
    (3 dof stereo, 2 dof mono) is removed. ``covariance``: compute the marginal covariance of the
    newest keyframe pose (``OdometryResult.covariance``). ``max_landmarks`` (0 = all) caps the
    landmarks optimised, the longest-observed first: gtsam's elimination costs ~15 us per
    landmark and iteration, so the cap bounds the time per keyframe. ``enabled`` False skips
    bundle adjustment (ablation)."""

    owner: ClassVar[str] = "odometry bundle"

    enabled: bool = True
    window: int = 6
    iterations: int = 10
    max_landmarks: int = 800
    pixel_sigma: float = 1.0
    huber_k: float = 2.0
    covariance: bool = True

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(conf["window"] >= 2, "bundle.window must be >= 2 keyframes")
        _check(conf["max_landmarks"] >= 0, "bundle.max_landmarks must be >= 0 (0 = all)")
        _check(conf["iterations"] >= 1, "bundle.iterations must be >= 1")
        _check(conf["pixel_sigma"] > 0, "bundle.pixel_sigma must be > 0 px")
        _check(conf["huber_k"] > 0, "bundle.huber_k must be > 0")


class RecoveryConfig(Config):
    """After a lost frame: first try to ``relocalise`` against the current map (matching without
    a motion prior); otherwise start a new map at the first frame with ``min_init_points``
    measured 3D points, anchored at the last good pose so the trajectory stays continuous."""

    owner: ClassVar[str] = "odometry recovery"

    relocalise: bool = True
    min_init_points: int = 50

    @classmethod
    def validate(cls, conf: Mapping[str, Any]) -> None:
        super().validate(conf)
        _check(conf["min_init_points"] >= 6, "recovery.min_init_points must be >= 6")


class OdometryConfig(Config):
    """All odometry settings: one section (a ``Config``) per stage. Keys are dotted,
    ``section.key`` (``replace(**{"bundle.window": 8})``, ``create({"tracking.ratio": "0.8"})``);
    a whole section may be given as its ``Config`` or as a mapping of its keys. Unknown keys
    and bad values are ``ConfigError``s naming the dotted key."""

    owner: ClassVar[str] = "odometry"

    stereo: StereoConfig = field(default_factory=StereoConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self) -> None:
        for name in self.key_names():  # a section given as a mapping becomes its Config
            value = getattr(self, name)
            if not isinstance(value, self.section_class(name)):
                object.__setattr__(self, name, self.cast(name, value))
        super().__post_init__()

    @classmethod
    def section_class(cls, section: str) -> type[Config]:
        """The ``Config`` class of ``section`` (``ConfigError`` naming the known sections)."""
        if section not in cls.key_names():
            raise ConfigError(f"unknown odometry section '{section}' (sections: "
                              + ", ".join(cls.key_names()) + ")")
        return type(cls.field_defaults()[section])

    @classmethod
    def cast(cls, key: str, value: Any, name: str | None = None) -> Any:
        """``section.key``: ``value`` cast to that key's type; ``section``: a section's
        ``Config`` or a mapping of its keys, as that section's ``Config``."""
        section, dot, sub = key.partition(".")
        if section not in cls.key_names():
            raise ConfigError(f"unknown odometry setting '{name or key}' (sections: "
                              + ", ".join(cls.key_names()) + ")")
        kind = cls.section_class(section)
        if dot:
            return kind.cast(sub, value, name=name or key)
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"odometry setting '{name or key}' is a section: give "
                              f"'{key}.<key>' values (known: {', '.join(kind.known_keys())})")
        return kind.create({k: kind.cast(k, v, name=f"{key}.{k}") for k, v in value.items()})

    @classmethod
    def check(cls, values: Mapping[str, Any] | None = None,
              base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``base`` (default: the defaults) with dotted ``values`` applied section by section,
        each section validated by its ``Config``."""
        merged = dict(base) if base is not None else cls.field_defaults()
        changes: dict[str, dict[str, Any]] = {}
        for key, value in (values or {}).items():
            section, dot, sub = key.partition(".")
            cast = cls.cast(key, value)
            if dot:
                changes.setdefault(section, {})[sub] = cast
            else:
                merged[section] = cast
        for section, values_of in changes.items():
            merged[section] = merged[section].replace(**values_of)
        cls.validate(merged)
        return merged
