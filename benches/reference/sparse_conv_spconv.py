"""spconv's CPU build on the same sites as benches/sparse_conv.rs: seconds of
forward + backward of SubMConv3d (k 3), SparseConv3d (k 2, stride 2) and
SparseConvTranspose3d (k 2, stride 2) for each channel width, median of
`steps` after a warm-up, 2 threads. Prints one JSON line per layer.

spconv 2.3's CPU path asks torch.cuda for a stream in its backward even on
a CPU tensor (it fails without a driver); the stream is unused on the CPU,
so it is replaced by 0 here.

usage: python sparse_conv_spconv.py COORDS.npy Z,Y,X C1,C2,... STEPS
"""
import json
import sys
import time

import numpy as np
import torch
import spconv
import spconv.pytorch as sp
import spconv.pytorch.cppcore as cppcore
import spconv.pytorch.ops as ops

ops.get_current_stream = lambda: 0
cppcore.get_current_stream = lambda: 0
torch.set_num_threads(2)


def median_time(fn, steps):
    fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    coords = torch.from_numpy(np.load(sys.argv[1]).astype(np.int32))
    shape = [int(v) for v in sys.argv[2].split(",")]
    widths = [int(v) for v in sys.argv[3].split(",")]
    steps = int(sys.argv[4])
    batch = int(coords[:, 0].max()) + 1
    for c in widths:
        torch.manual_seed(0)
        feats = torch.randn(coords.shape[0], c, requires_grad=True)
        layers = {
            "submanifold": sp.SubMConv3d(c, c, 3, bias=True, indice_key="subm"),
            "down": sp.SparseConv3d(c, c, 2, stride=2, bias=True, indice_key="down"),
        }
        for name, layer in layers.items():
            def step():
                x = sp.SparseConvTensor(feats, coords, shape, batch)
                y = layer(x)
                y.features.sum().backward()
            print(json.dumps({"impl": "spconv " + spconv.__version__, "layer": name, "channels": c,
                              "seconds": median_time(step, steps)}), flush=True)
        # transposed: from the down-sampled sites back up (spconv's inverse needs the key)
        up = sp.SparseConvTranspose3d(c, c, 2, stride=2, bias=True, indice_key="up")
        coarse = layers["down"](sp.SparseConvTensor(feats.detach(), coords, shape, batch))
        cf = coarse.features.detach().requires_grad_(True)

        def step_up():
            x = sp.SparseConvTensor(cf, coarse.indices, coarse.spatial_shape, batch)
            up(x).features.sum().backward()
        print(json.dumps({"impl": "spconv " + spconv.__version__, "layer": "up (all children)", "channels": c,
                          "seconds": median_time(step_up, steps)}), flush=True)


if __name__ == "__main__":
    main()
