"""radvox's memory planner: a training step's predicted peak memory."""

from typing import Optional, Sequence

from . import _native


def plan(model: str = "ultra_lightweight", grid: Sequence[int] = (96, 608, 224), batch: int = 1,
         precision: str = "f32", checkpointing: str = "off", backend: str = "cuda",
         dataset_dir: Optional[str] = None) -> dict:
    """Bytes of one training step by part (params, grads, optimizer, inputs,
    amp_weights, activations, transient, loader, buckets, runtime, total).
    ``model``: a dense VAE preset, ``"unet"``, or a sparse preset
    (``"sparse_small"``, ``"sparse_base"``, ``"sparse_wide"``), which is
    planned from the worst training frame of ``dataset_dir`` (a scan of its
    occupied voxels; ``grid`` is then the root's); ``precision``:
    ``"f32"``/``"amp"``; ``checkpointing``: ``"off"``, ``"block"`` or a segment count."""
    return _native.plan(model, list(grid), batch, precision, checkpointing, backend,
                        None if dataset_dir is None else str(dataset_dir))


def fit(budget_gb: float, model: str = "ultra_lightweight", grid: Sequence[int] = (96, 608, 224), batch: int = 1,
        precision: str = "f32", checkpointing: str = "off", backend: str = "cuda",
        dataset_dir: Optional[str] = None) -> dict:
    """Whether the step fits ``budget_gb``: ``fits``, the ``requested`` plan,
    the fewest ``changes`` that make it fit and their ``suggested`` plan, and
    the ``largest`` configuration that fits (plans as in ``plan``; a sparse
    preset needs ``dataset_dir``, as in ``plan``)."""
    return _native.fit(budget_gb, model, list(grid), batch, precision, checkpointing, backend,
                       None if dataset_dir is None else str(dataset_dir))
