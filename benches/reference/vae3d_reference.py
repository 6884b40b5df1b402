"""PyTorch implementation of the VAE3D architecture in shared/spec/vae3d.md,
used only as the same-machine timing/memory baseline of `cargo bench --bench
vae_step`. One process per measurement, so peak RSS (ru_maxrss) is its own.

usage: python vae3d_reference.py MODE D H W STEPS [DEVICE]
  MODE: plain | checkpoint | f16 | f16_checkpoint (f16: CUDA float16 autocast
  with a GradScaler, as radvox's CUDA AMP); DEVICE: cpu (default) | cuda
prints one JSON line: seconds per micro-step (median after a warm-up) and peak
bytes: RSS on a CPU, torch.cuda.max_memory_allocated on CUDA.
"""
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def norm(c):
    return nn.GroupNorm(min(32, c), c, eps=1e-5)


class Res(nn.Module):
    def __init__(self, cin, cout, ck):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        self.ck = ck

    def inner(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h

    def forward(self, x):
        return checkpoint(self.inner, x, use_reentrant=False) if self.ck and self.training else self.inner(x)


def stride(i):
    return (2, 2, 2) if i == 1 else (1, 2, 2)


class Up(nn.Module):
    def __init__(self, c, s):
        super().__init__()
        self.conv, self.s = nn.Conv3d(c, c, 3, padding=1), s

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.s, mode="trilinear", align_corners=False))


class VAE(nn.Module):
    def __init__(self, base=16, mult=(1, 2, 2), ck=False):
        super().__init__()
        enc, c = [nn.Conv3d(4, base, 3, padding=1)], base
        for i, m in enumerate(mult):
            enc.append(Res(c, base * m, ck))
            c = base * m
            if i < len(mult) - 1:
                enc.append(nn.Conv3d(c, c, 3, stride=stride(i), padding=1))
        enc += [Res(c, c, ck), Res(c, c, ck), norm(c), nn.SiLU(), nn.Conv3d(c, 8, 3, padding=1)]
        self.enc = nn.Sequential(*enc)
        self.quant, self.post = nn.Conv3d(4, 4, 1), nn.Conv3d(4, 4, 1)
        rmult = list(reversed(mult))
        c = base * rmult[0]
        dec = [nn.Conv3d(4, c, 3, padding=1), Res(c, c, ck), Res(c, c, ck)]
        for i, m in enumerate(rmult):
            for _ in range(2):
                dec.append(Res(c, base * m, ck))
                c = base * m
            if i < len(rmult) - 1:
                dec.append(Up(c, stride(i)))
        dec += [norm(c), nn.SiLU(), nn.Conv3d(c, 4, 3, padding=1)]
        self.dec = nn.Sequential(*dec)

    def forward(self, x):
        mean, logvar = self.enc(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = self.quant(mean + torch.randn_like(mean) * torch.exp(0.5 * logvar))
        recon = self.dec(self.post(z))
        kl = -0.5 * torch.mean(1 + logvar - mean.pow(2) - logvar.exp())
        return F.mse_loss(recon, x) + 1e-6 * kl


def main():
    mode, d, h, w, steps = sys.argv[1], *map(int, sys.argv[2:6])
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    f16 = mode.startswith("f16")
    assert not f16 or device.type == "cuda", "f16 autocast is the CUDA mode"
    torch.manual_seed(0)
    model = VAE(ck=mode.endswith("checkpoint")).train().to(device)
    assert sum(p.numel() for p in model.parameters()) == 694788
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=f16)
    x = torch.randn(1, 4, d, h, w, device=device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=f16):
            loss = model(x) / 8
        scaler.scale(loss).backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    scaler.step(opt)
    times = sorted(times[1:])
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"impl": "pytorch", "mode": mode, "seconds": times[len(times) // 2],
                      "peak": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
