"""Milliseconds per call of libtorch's two CPU paths for small batch-1 float32
3D convolutions (kernel 3, padding 1): `torch.conv3d`, which sends inputs with
batch 1 and C * D * H <= 20480 to the unfolding `slow_conv3d`, against
`torch.mkldnn_convolution` (oneDNN) on the same input, and batch 2 for scale.
The figures behind `model::blocks::conv3d` (README, "Measured").

Run with the cached libtorch wheel's Python:
    ~/.cache/radvox/torch-2.11.0/bin/python benches/reference/conv_paths.py
"""
import time

import torch

torch.set_num_threads(2)


def ms(f, n=20):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


for c, d, h, w in [(32, 8, 64, 32), (64, 4, 32, 16), (8, 12, 76, 28), (16, 8, 64, 32), (32, 12, 76, 28)]:
    weight = torch.randn(c, c, 3, 3, 3)
    x1, x2 = torch.randn(1, c, d, h, w), torch.randn(2, c, d, h, w)
    unfolds = c * d * h <= 20480
    a = ms(lambda: torch.nn.functional.conv3d(x1, weight, padding=1))
    b = ms(lambda: torch.nn.functional.conv3d(x2, weight, padding=1))
    m = ms(lambda: torch.mkldnn_convolution(x1, weight, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1))
    print(f"(1, {c}, {d}, {h}, {w}) unfolds={unfolds}: conv3d {a:.2f} ms, mkldnn {m:.2f} ms; batch 2 conv3d {b:.2f} ms")
