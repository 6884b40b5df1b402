"""radvox's streaming probabilistic obstacle map (``radvox::map``).

``Map`` takes frames of occupied world points (with probabilities) and the
sensor's position: occupied evidence at the points, free evidence along the
rays to them (3D DDA), log-odds with clamping (OctoMap's defaults) or
Dempster-Shafer masses, optional decay towards unknown and a sliding window.
``scene_frames`` reads a dataset root's scene (radar, target, LiDAR or a
``sample`` predictions folder) in the world by its ``poses.txt``.
"""

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from . import _native

__all__ = ["Map", "scene_frames"]


def _points(points) -> bytes:
    pts = np.ascontiguousarray(points, dtype="<f8")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {pts.shape}")
    return pts.tobytes()


class Map:
    """A voxel map in the world frame. ``model``: ``"log_odds"`` or
    ``"dempster_shafer"``; ``decay_s``: time constant of the decay towards
    unknown; ``max_range``: rays longer are cut; ``window``: horizontal
    radius (m) beyond which blocks are dropped (``None`` keeps all);
    ``threshold``: the probability above which a voxel is occupied."""

    def __init__(self, voxel: float = 0.2, model: str = "log_odds", decay_s: Optional[float] = None,
                 max_range: Optional[float] = None, window: Optional[float] = 200.0, threshold: float = 0.5):
        self._native = _native.Map(voxel, model, decay_s, max_range, window, threshold)

    def insert(self, points, origin: Sequence[float], time: float, probs=None, reliability: float = 1.0) -> dict:
        """Inserts one frame: ``(N, 3)`` world points, the sensor position,
        the time in seconds, optional ``(N,)`` occupancy probabilities.
        Returns counts (``occupied``, ``free``, ``traversed``, ...) and ``seconds``."""
        p = None if probs is None else np.ascontiguousarray(probs, dtype="<f4").tobytes()
        return self._native.insert(_points(points), list(origin), float(time), p, reliability)

    def occupied(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(keys, probabilities)``: int32 ``(M, 3)`` voxel keys (``floor(p / voxel)``) and float64 ``(M,)``."""
        keys, probs = self._native.occupied()
        return np.asarray(keys, dtype=np.int32).reshape(-1, 3), np.asarray(probs, dtype=np.float64)

    def centres(self, keys) -> np.ndarray:
        """World centres of voxel keys."""
        return (np.asarray(keys, dtype=np.float64) + 0.5) * self.voxel

    def probability(self, points) -> np.ndarray:
        """The occupancy probability now at each ``(N, 3)`` world point (0.5 where unknown)."""
        return np.asarray(self._native.probability(_points(points)), dtype=np.float64)

    def nearest(self, point: Sequence[float], max_dist: float):
        """``(distance, key, probability)`` of the nearest occupied voxel within ``max_dist`` m, or ``None``."""
        return self._native.nearest(list(point), max_dist)

    def clearance(self, a: Sequence[float], b: Sequence[float], max_dist: float):
        """``(nearest or None, known)`` for the segment ``a -> b``: the nearest
        occupied voxel as in ``nearest`` and the share of the segment's voxels ever observed."""
        return self._native.clearance(list(a), list(b), max_dist)

    def dem(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(columns int32 (K, 2), mean height, height variance, frames)`` of the elevation map."""
        cols, mean, var, frames = self._native.dem()
        return (np.asarray(cols, dtype=np.int32).reshape(-1, 2), np.asarray(mean), np.asarray(var),
                np.asarray(frames, dtype=np.int64))

    def write_ply(self, path) -> int:
        """Writes the occupied voxels as ``.ply``; returns how many."""
        return self._native.write_ply(str(path))

    def write_bev(self, path, title: str = "MAP") -> None:
        """Writes the bird's-eye PNG of occupancy probability and elevation."""
        self._native.write_bev(str(path), title)

    @property
    def voxel(self) -> float:
        return self._native.voxel

    @property
    def blocks(self) -> int:
        """Blocks (8^3 voxels) held."""
        return self._native.blocks

    @property
    def bytes(self) -> int:
        """Heap bytes held."""
        return self._native.bytes

    @property
    def frames(self) -> int:
        """Frames inserted."""
        return self._native.frames


def scene_frames(root, scene: str, source: str = "radar", resample: Optional[Sequence[int]] = None,
                 min_probability: float = 0.5) -> Iterator[Tuple[str, float, np.ndarray, np.ndarray, np.ndarray]]:
    """The frames of ``scene`` in the world: ``(stem, time, origin, points (N, 3), probs (N,))``.
    ``source``: ``"radar"``, ``"target"``, ``"lidar"`` or a predictions folder."""
    for stem, t, origin, pts, probs in _native.scene_frames(str(root), scene, source,
                                                            None if resample is None else list(resample),
                                                            min_probability):
        yield (stem, t, np.asarray(origin), np.frombuffer(pts, dtype="<f8").reshape(-1, 3),
               np.frombuffer(probs, dtype="<f4"))
