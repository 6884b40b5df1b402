"""radvox for PyTorch users: NTU4DRadLM_Pre frames as f16 ``torch.Tensor``\\s.

``Dataset`` reads frames (sparse ``.npz`` / dense ``.npy``, padded or
resampled), ``Loader`` batches them on Rust threads into a bounded pool of
buffers that reach Python without a copy (DLPack), ``voxelize`` turns point
clouds into the dataset's grid, ``memory.plan`` / ``memory.fit`` predict a
training step's memory and ``map.Map`` streams frames into a probabilistic
obstacle map. No ``torch.utils.data.DataLoader`` is involved.

Errors keep radvox's messages: ``OSError`` (``FileNotFoundError``) when a
file cannot be read, ``ValueError`` for bad values and configs.
"""

import json as _json
from typing import Iterator, List, Optional, Sequence, Tuple

import torch  # first: loads the libtorch the extension links

from torch.utils.dlpack import from_dlpack as _from_dlpack

from . import _native, map, memory

__all__ = ["Dataset", "Loader", "voxelize", "memory", "map"]


class Dataset:
    """One split (``"train"``, ``"val"``, ``"all"``) of an NTU4DRadLM_Pre tree.

    ``dataset[i]`` is ``(target, radar)``, f16 tensors of shape ``(C, Z, H, W)``:
    zero-padded to a multiple of ``alignment`` (96 x 608 x 224 for the real
    grid), or resampled to ``resample=(Z, H, W)``.
    """

    def __init__(self, root, split: str = "train", resample: Optional[Sequence[int]] = None, alignment: int = 32):
        self._native = _native.Dataset(str(root), split, None if resample is None else list(resample), alignment)

    def __len__(self) -> int:
        return len(self._native)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        target, radar = self._native.get(i)
        return _from_dlpack(target), _from_dlpack(radar)

    @property
    def ids(self) -> List[Tuple[str, str]]:
        """``(scene, stem)`` of every frame, in order."""
        return self._native.ids()

    def shape(self, i: int) -> Tuple[int, int, int, int]:
        """``(C, Z, H, W)`` of frame ``i``."""
        return tuple(self._native.shape(i))


class Loader:
    """Batches of a ``Dataset``, decoded ahead on ``num_workers`` Rust threads.

    Iterating yields ``(target, radar, ids)``: f16 tensors ``(B, C, Z, H, W)``
    that share the loader's pooled buffers (no copy) and the frames'
    ``"scene/stem"``. A buffer returns to the pool only when PyTorch frees
    every tensor over it: a batch you keep is never overwritten. Each
    ``iter(loader)`` is the next epoch (``set_epoch`` picks one, as
    ``DistributedSampler`` does); frames are sharded over ``world_size``
    ranks. ``augmentation`` is radvox's augmentation config as a dict (the
    exact parameter names; a misspelt one is a ``ValueError`` naming the
    closest). The GIL is released while a batch is awaited.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, seed: int = 0,
                 num_workers: int = 1, prefetch: int = 2, rank: int = 0, world_size: int = 1,
                 augmentation: Optional[dict] = None, drop_last: bool = False, load_radar: bool = True,
                 read_timeout: Optional[float] = 120.0):
        aug = None if augmentation is None else _json.dumps(augmentation)
        self._native = _native.Loader(dataset._native, batch_size, shuffle, seed, num_workers, prefetch, rank,
                                      world_size, aug, drop_last, load_radar, read_timeout)
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._native)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration draws (its permutation and augmentation)."""
        self._epoch = epoch

    def order(self, epoch: int) -> List[int]:
        """Dataset indices of this rank's frames in ``epoch``, in order."""
        return self._native.order(epoch)

    def pool_stats(self) -> dict:
        """Buffer pool counters: capacity, allocated, reused, escaped, outstanding..."""
        return self._native.pool_stats()

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, List[str]]]:
        epoch = self._native.epoch(self._epoch)
        self._epoch += 1
        try:
            for target, radar, ids in epoch:
                yield _from_dlpack(target), _from_dlpack(radar), ids
        finally:
            epoch.close()  # stopped early too: workers end, buffers return


def voxelize(points, range: Optional[Sequence[float]] = None, voxel: Optional[float] = None):
    """Voxelizes an ``(N, C)`` point cloud (``x, y, z`` then features) into the
    NTU4DRadLM_Pre grid (range ``[0, -20, -6, 120, 20, 10]`` m, 0.2 m voxels
    unless given). Returns ``(coords, features, stats)``: int64 ``(M, 3)``
    voxel indices, float32 ``(M, 4)`` features, and point counts."""
    import numpy as np

    pts = np.ascontiguousarray(points, dtype="<f4")
    if pts.ndim != 2:
        raise ValueError(f"points must be (N, C), got shape {pts.shape}")
    coords, features, stats = _native.voxelize(pts.tobytes(), pts.shape[1], None if range is None else list(range), voxel)
    return (np.asarray(coords, dtype=np.int64).reshape(-1, 3), np.asarray(features, dtype=np.float32).reshape(-1, 4),
            stats)
