"""Train a small reference-style 3D VAE in plain PyTorch, fed by radvox.Loader.

    .venv-python python/examples/train_vae_torch.py --dataset-dir runs/sim/ntu --resample 8,64,32 --epochs 6

No torch.utils.data: radvox decodes frames on Rust threads into pooled f16
buffers that arrive as torch tensors without a copy.
"""
import argparse
import time

import torch
from torch import nn

import radvox


def block(cin, cout):
    return nn.Sequential(nn.GroupNorm(min(4, cin), cin), nn.SiLU(), nn.Conv3d(cin, cout, 3, padding=1))


class Vae3d(nn.Module):
    """Encoder with two 2x downsamplings to a 4-channel latent (mean, log-variance), mirrored decoder."""

    def __init__(self, channels=4, base=16, latent=4):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(channels, base, 3, padding=1), block(base, base), nn.Conv3d(base, base, 3, stride=2, padding=1),
            block(base, 2 * base), nn.Conv3d(2 * base, 2 * base, 3, stride=2, padding=1), block(2 * base, 2 * latent))
        self.decoder = nn.Sequential(
            nn.Conv3d(latent, 2 * base, 3, padding=1), block(2 * base, 2 * base), nn.Upsample(scale_factor=2),
            block(2 * base, base), nn.Upsample(scale_factor=2), block(base, base), nn.Conv3d(base, channels, 3, padding=1))

    def forward(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return self.decoder(z), kl


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset-dir", required=True)
    p.add_argument("--resample", default="8,64,32", help="Z,H,W every frame is resampled to")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    zhw = [int(v) for v in args.resample.split(",")]
    train = radvox.Dataset(args.dataset_dir, "train", resample=zhw)
    loader = radvox.Loader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed,
                           num_workers=args.num_workers, load_radar=False)
    model = Vae3d(channels=train.shape(0)[0])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses = []
    for epoch in range(args.epochs):
        t0, total, frames = time.perf_counter(), 0.0, 0
        for target, _radar, ids in loader:
            x = target.float()
            recon, kl = model(x)
            loss = nn.functional.mse_loss(recon, x) + 1e-6 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(ids)
            frames += len(ids)
        losses.append(total / frames)
        print(f"epoch {epoch} loss {losses[-1]:.4e} {frames / (time.perf_counter() - t0):.1f} frames/s", flush=True)
    return losses


if __name__ == "__main__":
    main()
