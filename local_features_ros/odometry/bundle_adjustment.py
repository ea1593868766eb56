"""Sliding-window local bundle adjustment with gtsam.

Why gtsam: a factor graph with stereo (``GenericStereoFactor3D``) and monocular
(``GenericProjectionFactorCal3_S2``) reprojection factors under a Huber loss, solved by sparse
Levenberg-Marquardt with a Schur-friendly ordering, and the marginal covariance of a pose from
the same graph - a maintained library instead of hand-written Gauss-Newton.

The problem solved at each keyframe: the poses of the newest ``window`` keyframes (the oldest
of them held fixed by a ``NonlinearEqualityPose3``, which removes the gauge freedom; stereo or
depth fixes the scale) and every landmark observed by at least two of them. An observation
with a measured right-image column (stereo, or the virtual one of a depth camera) is a 3-D
stereo factor - depth enters with the disparity's own uncertainty, which grows with the square
of the distance - otherwise a 2-D projection factor. Afterwards observations whose error is
beyond the 95 % chi-square bound are removed from the map: a wrong association must not pull
the next optimisation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .camera import RectifiedCamera
from .config import BundleConfig
from .local_map import LocalMap

logger = logging.getLogger(__name__)

__all__ = ["BundleReport", "LocalBundleAdjuster", "gtsam_available"]

#: 95 % chi-square bounds for 3 (stereo) and 2 (mono) degrees of freedom.
_CHI2 = {3: 7.815, 2: 5.991}


def gtsam_available() -> bool:
    try:
        import gtsam  # noqa: F401
    except ImportError:
        return False
    return True


def _gtsam():
    try:
        import gtsam
    except ImportError as exc:  # a clear reason instead of a bare ImportError mid-sequence
        raise RuntimeError("local bundle adjustment needs gtsam (pip install gtsam==4.3.0, "
                           "see requirements.txt) or bundle.enabled=false") from exc
    return gtsam


@dataclass
class BundleReport:
    """What one optimisation did (``covariance``: 6x6 of the newest keyframe, or None)."""

    milliseconds: float
    keyframes: int
    landmarks: int
    factors: int
    removed: int
    initial_error: float
    final_error: float
    covariance: np.ndarray | None


class LocalBundleAdjuster:
    def __init__(self, camera: RectifiedCamera, cfg: BundleConfig) -> None:
        gtsam = _gtsam()
        self.camera = camera
        self.cfg = cfg
        self._K_stereo = gtsam.Cal3_S2Stereo(camera.fx, camera.fy, 0.0, camera.cx, camera.cy,
                                             camera.baseline)
        self._K_mono = gtsam.Cal3_S2(camera.fx, camera.fy, 0.0, camera.cx, camera.cy)
        self._noise: dict[tuple[int, float], object] = {}

    def _model(self, dim: int, sigma: float) -> object:
        """Huber-robust isotropic noise of ``sigma`` px (cached: most keypoints share one)."""
        key = (dim, round(float(sigma), 2))
        model = self._noise.get(key)
        if model is None:
            gtsam = _gtsam()
            model = gtsam.noiseModel.Robust.Create(
                gtsam.noiseModel.mEstimator.Huber.Create(self.cfg.huber_k),
                gtsam.noiseModel.Isotropic.Sigma(dim, key[1] * self.cfg.pixel_sigma))
            self._noise[key] = model
        return model

    def optimise(self, local_map: LocalMap) -> BundleReport | None:
        """Optimise the newest window of ``local_map`` in place; None with < 2 keyframes."""
        gtsam = _gtsam()
        from gtsam.symbol_shorthand import L, X

        t0 = time.perf_counter()
        window = local_map.window(self.cfg.window)
        if len(window) < 2:
            return None
        in_window = {kf.id: kf for kf in window}
        graph = gtsam.NonlinearFactorGraph()
        values = gtsam.Values()
        for kf in window:
            values.insert(X(kf.id), gtsam.Pose3(kf.T_world_cam))
        fixed = window[0]
        graph.add(gtsam.NonlinearEqualityPose3(X(fixed.id), gtsam.Pose3(fixed.T_world_cam)))
        records: list[tuple[int, int, int, float]] = []  # factor -> (kf, lm, dim, sigma)
        used: list[int] = []
        for lm, obs in self._select(local_map, in_window):
            used.append(lm.id)
            values.insert(L(lm.id), gtsam.Point3(*lm.position))
            for k, i in obs:
                meas = in_window[k].measurement
                u, v = meas.keypoints[i]
                sigma = float(meas.sigma[i])
                ur = meas.u_right[i]
                if np.isfinite(ur):
                    graph.add(gtsam.GenericStereoFactor3D(
                        gtsam.StereoPoint2(u, ur, v), self._model(3, sigma), X(k), L(lm.id),
                        self._K_stereo))
                    records.append((k, lm.id, 3, sigma))
                else:
                    graph.add(gtsam.GenericProjectionFactorCal3_S2(
                        gtsam.Point2(u, v), self._model(2, sigma), X(k), L(lm.id),
                        self._K_mono))
                    records.append((k, lm.id, 2, sigma))
        if not used:
            return None
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(int(self.cfg.iterations))
        params.setVerbosityLM("SILENT")
        # Landmarks first, poses last: eliminating the points first is the Schur complement of
        # bundle adjustment (each point touches only its own cameras); 15-20 % faster than
        # gtsam's default fill-reducing ordering on these graphs.
        ordering = gtsam.Ordering()
        for lm_id in used:
            ordering.push_back(L(lm_id))
        for kf in window:
            ordering.push_back(X(kf.id))
        params.setOrdering(ordering)
        t_build = time.perf_counter()
        initial_error = graph.error(values)
        try:
            optimizer = gtsam.LevenbergMarquardtOptimizer(graph, values, params)
            result = optimizer.optimize()
        except RuntimeError as exc:  # an indeterminant system: keep the map as it was
            logger.warning("bundle adjustment failed (%s); map left unchanged", exc)
            return None
        t_solve = time.perf_counter()
        logger.debug("bundle adjustment: build %.1f ms, solve %.1f ms (%d iterations)",
                     1000 * (t_build - t0), 1000 * (t_solve - t_build), optimizer.iterations())
        final_error = graph.error(result)
        for kf in window[1:]:
            kf.T_world_cam = result.atPose3(X(kf.id)).matrix()
        for lm_id in used:
            local_map.landmarks[lm_id].position = np.asarray(result.atPoint3(L(lm_id)), float)
        removed = self._remove_outliers(graph, result, records, local_map)
        covariance = None
        if self.cfg.covariance:
            covariance = self._covariance(graph, result, window[-1].id)
        ms = 1000.0 * (time.perf_counter() - t0)
        return BundleReport(ms, len(window), len(used), int(graph.size()), removed,
                            float(initial_error), float(final_error), covariance)

    def _select(self, local_map: LocalMap, in_window: dict[int, object]
                ) -> list[tuple[object, list[tuple[int, int]]]]:
        """Landmarks seen by at least two window keyframes with those observations; at most
        ``max_landmarks`` of them, the longest-observed first (they tie the most keyframes
        together; newer ones are still optimised at the next keyframes)."""
        chosen = []
        for lm in local_map.landmarks.values():
            obs = [(k, i) for k, i in lm.observations.items() if k in in_window]
            if len(obs) >= 2:
                chosen.append((lm, obs))
        if 0 < self.cfg.max_landmarks < len(chosen):
            chosen.sort(key=lambda item: (-len(item[1]), item[0].id))
            chosen = chosen[:self.cfg.max_landmarks]
        return chosen

    def _remove_outliers(self, graph, result, records: list[tuple[int, int, int, float]],
                         local_map: LocalMap) -> int:
        removed = 0
        for n, (kf_id, lm_id, dim, sigma) in enumerate(records):
            factor = graph.at(n + 1)  # factor 0 is the fixed pose
            err = np.asarray(factor.unwhitenedError(result), float)
            chi2 = float(err @ err) / (sigma * self.cfg.pixel_sigma) ** 2
            if not np.isfinite(chi2) or chi2 > _CHI2[dim]:
                local_map.remove_observation(kf_id, lm_id)
                removed += 1
        return removed

    @staticmethod
    def _covariance(graph, result, kf_id: int) -> np.ndarray | None:
        gtsam = _gtsam()
        from gtsam.symbol_shorthand import X

        try:
            return np.asarray(gtsam.Marginals(graph, result).marginalCovariance(X(kf_id)))
        except RuntimeError as exc:
            logger.debug("no marginal covariance: %s", exc)
            return None
