"""radvox.Loader against a plain PyTorch Dataset + DataLoader doing the same work.

    .venv-python python/bench_loader.py ROOT [--frames N]

Each side runs in its own process (peak RSS is per process): the same frames
of the train split at the real grid, padded to (4, 96, 608, 224) f16, target
and radar, batch 1, one worker, no pinned memory. The PyTorch side is the
reference's loader: densify each sparse `.npz` in `__getitem__` (numpy), then
transpose, pad and convert to f16. Prints frames/s and peak RSS of each (and
above the RSS after `import torch`), and their ratios.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time


def peak_rss_mib():
    """This process's peak RSS plus that of its largest finished child (a
    DataLoader worker process; radvox's workers are threads)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0


def run_radvox(root, frames):
    import radvox

    base = peak_rss_mib()
    ds = radvox.Dataset(root, "train")
    loader = radvox.Loader(ds, batch_size=1, num_workers=1, prefetch=2)
    n, checksum, t0 = 0, 0.0, time.perf_counter()
    for target, radar, _ in loader:
        checksum += float(target[0, 0].sum()) + float(radar[0, 0].sum())
        n += 1
        if n == frames:
            break
    return n, time.perf_counter() - t0, checksum, base


def run_torch(root, frames):
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    class NpzFrames(Dataset):
        """The reference's way: read a sparse frame, densify, transpose, pad, f16."""

        def __init__(self, root):
            scenes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            train = scenes[: max(1, int(0.8 * len(scenes)))]
            self.items = []
            for s in train:
                for f in sorted(os.listdir(os.path.join(root, s, "target_voxel"))):
                    self.items.append((os.path.join(root, s, "target_voxel", f), os.path.join(root, s, "radar_voxel", f)))

        def __len__(self):
            return len(self.items)

        @staticmethod
        def dense(path):
            with np.load(path) as z:
                grid = np.zeros(tuple(z["shape"]), np.float32)  # (H, W, Z, C)
                grid[tuple(z["coords"].T)] = z["features"]
            t = np.transpose(grid, (3, 2, 0, 1))  # (C, Z, H, W)
            pads = [(0, 0)] + [(0, (-n) % 32) for n in t.shape[1:]]
            return torch.from_numpy(np.pad(t, pads).astype(np.float16))

        def __getitem__(self, i):
            target, radar = self.items[i]
            return self.dense(target), self.dense(radar)

    base = peak_rss_mib()
    loader = DataLoader(NpzFrames(root), batch_size=1, num_workers=1, pin_memory=False)
    n, checksum, t0 = 0, 0.0, time.perf_counter()
    it = iter(loader)
    for target, radar in it:
        checksum += float(target[0, 0].sum()) + float(radar[0, 0].sum())
        n += 1
        if n == frames:
            break
    secs = time.perf_counter() - t0
    del it  # the worker process exits (and counts as a finished child)
    return n, secs, checksum, base


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--side", choices=["radvox", "torch"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        n, secs, checksum, base = (run_radvox if a.side == "radvox" else run_torch)(a.root, a.frames)
        print(json.dumps({"frames": n, "seconds": secs, "checksum": checksum, "peak_rss_mib": peak_rss_mib(),
                          "import_rss_mib": base}))
        return
    res = {}
    for side in ["radvox", "torch"]:
        out = subprocess.run([sys.executable, __file__, a.root, "--frames", str(a.frames), "--side", side],
                             check=True, capture_output=True, text=True).stdout
        res[side] = json.loads(out.strip().splitlines()[-1])
        r = res[side]
        print(f"{side:>7}: {r['frames']} frames in {r['seconds']:.2f} s = {r['frames'] / r['seconds']:.1f} frames/s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] - r['import_rss_mib']:.0f} above the "
              f"{r['import_rss_mib']:.0f} MiB after import; checksum {r['checksum']:.6g})")
    fr = {s: res[s]["frames"] / res[s]["seconds"] for s in res}
    above = {s: res[s]["peak_rss_mib"] - res[s]["import_rss_mib"] for s in res}
    print(f"radvox / torch: {fr['radvox'] / fr['torch']:.1f}x frames/s, "
          f"{res['radvox']['peak_rss_mib'] / res['torch']['peak_rss_mib']:.2f}x peak RSS, "
          f"{above['radvox'] / above['torch']:.2f}x above import")
    if abs(res["radvox"]["checksum"] - res["torch"]["checksum"]) > 1e-3 * abs(res["torch"]["checksum"]) + 1e-3:
        sys.exit("checksums differ: the two sides did not read the same frames")


if __name__ == "__main__":
    main()
