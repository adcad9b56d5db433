"""Is the heavy-rain veil identifiable with supervision? A probe, measured on the validation split.

    python scripts/veil_probe.py [--project .] [--seeds 0,1,2] [--train-draws 3000] [--val-draws 60]
        [--steps 3000]

A small pooled CNN (convolutions on ``y`` and its dark channel, then mean / max / min pooling and an
MLP) regresses the drawn veil ``a`` and airlight ``A`` of ``degrade.rain.style: heavy``
(``y = a (x + r) + (1 - a) A``) from ``y``: trained, per seed, on fresh heavy-rain draws of the
project's training images (``data/derain/prepared``, split train), scored on fresh draws of the
validation images (another seed). For each estimator seed it prints the correlation of its
estimates with the drawn ones, the offset ``(1 - a) A``'s mean absolute error beside that of a
constant guess, and the project's derain model (``models/derain/seed-0/model.pt``, trained on
veiled rain) fed ``y`` as it is, unveiled with the true veil (``(y - (1 - a) A) / a``), and
unveiled with the estimate; PSNR against the clean image, RGB and Y, per validation image too.
``key=value`` lines; the last, ``estimated_minus_y_db``, the mean over seeds of what removing the
estimated veil does to the model's RGB PSNR.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import datasets  # noqa: E402
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.generators.rain import add_rain, heavy_spec  # noqa: E402
from pipeline.metrics import luminance, psnr  # noqa: E402
from pipeline.stats import paired_interval  # noqa: E402

BATCH, CROP = 16, 64


def draws(images: list[np.ndarray], n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """``n`` heavy-rain draws ``(x, y, a, A)`` cycling over ``images`` ``(C, H, W)``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = images[i % len(images)]
        s = add_rain(x, rng, heavy_spec())
        out.append((x, s.y, s.veil, s.airlight))
    return out


class VeilNet(nn.Module):
    """``y (B, 3, H, W)`` -> ``(a, A)``, each ``(B,)``, in the ranges of the heavy style (with margin)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(nn.Conv2d(4, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(w, w, 3, 2, 1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1))
        self.head = nn.Sequential(nn.Linear(3 * w, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(torch.cat([y, y.amin(1, keepdim=True)], 1))
        o = self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3)), f.amin((2, 3))], 1))
        return 0.6 + 0.35 * torch.sigmoid(o[:, 0]), 0.7 + 0.3 * torch.sigmoid(o[:, 1])


def unveil(y: np.ndarray, a: float, A: float) -> np.ndarray:
    return np.clip((y - (1 - a) * A) / a, 0, 1).astype(np.float32)


def train_estimator(train: list, seed: int, steps: int) -> VeilNet:
    """Adam, cosine learning rate, MSE on the offset ``(1 - a) A`` and on ``a``, random crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = VeilNet()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for step in range(steps):
        picks = [train[i] for i in rng.integers(0, len(train), BATCH)]
        size = min(CROP, *(min(y.shape[1:]) for _, y, _, _ in picks))
        crops = []
        for _, y, _, _ in picks:
            i, j = rng.integers(0, y.shape[1] - size + 1), rng.integers(0, y.shape[2] - size + 1)
            crops.append(y[:, i:i + size, j:j + size])
        t = torch.tensor([(a, A) for _, _, a, A in picks], dtype=torch.float32)
        a, A = net(torch.from_numpy(np.stack(crops)))
        loss = F.mse_loss((1 - a) * A, (1 - t[:, 0]) * t[:, 1]) + F.mse_loss(a, t[:, 0])
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def ci95(d: np.ndarray) -> str:
    """The mean difference and its 95 % Student-t interval (:func:`pipeline.stats.paired_interval`)."""
    mean, lo, hi = paired_interval(d)
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=str(ROOT), help="a project after dvc repro (data/derain, models/derain)")
    p.add_argument("--seeds", default="0,1,2", help="estimator seeds")
    p.add_argument("--train-draws", type=int, default=3000)
    p.add_argument("--val-draws", type=int, default=60)
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    torch.set_num_threads(2)
    prepared = Path(args.project) / "data" / "derain" / "prepared"
    train = draws(datasets.clean_images(prepared, "train"), args.train_draws, 100)
    val = draws(datasets.clean_images(prepared, "val"), args.val_draws, 200)
    names = [r["name"] for r in datasets.read_manifest(prepared) if r["split"] == "val"]
    model, _, _ = load_model(Path(args.project) / "models" / "derain" / "seed-0" / "model.pt", task="derain")
    model.eval()

    def restored(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
        with torch.no_grad():
            out = np.moveaxis(model(torch.from_numpy(np.ascontiguousarray(y))[None]).x[0].clamp(0, 1).numpy(), 0, -1)
        gt = np.moveaxis(x, 0, -1)
        return psnr(out, gt), psnr(luminance(out), luminance(gt))

    base = np.array([restored(y, x) for x, y, _, _ in val])
    true = np.array([restored(unveil(y, a, A), x) for x, y, a, A in val])
    drawn_a = np.array([a for _, _, a, _ in val])
    drawn_off = np.array([(1 - a) * A for _, _, a, A in val])
    image = np.arange(len(val)) % len(names)
    print(f"val_draws={len(val)}")
    print(f"val_images={','.join(names)}")
    print(f"model_on_y_psnr={base[:, 0].mean():.2f}")
    print(f"model_on_y_psnr_y={base[:, 1].mean():.2f}")
    print(f"true_veil_removed_psnr={true[:, 0].mean():.2f}")
    print(f"true_veil_removed_psnr_y={true[:, 1].mean():.2f}")
    print(f"true_minus_y_db={ci95(true[:, 0] - base[:, 0])}")
    for k, name in enumerate(names):
        print(f"true_minus_y_db_{name}={(true[image == k, 0] - base[image == k, 0]).mean():+.2f}")
    print(f"offset_mae_constant_guess={np.abs(drawn_off - drawn_off.mean()).mean():.3f}")
    gains = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        net = train_estimator(train, seed, args.steps)
        with torch.no_grad():
            est = np.array([[float(v) for v in net(torch.from_numpy(y)[None])] for _, y, _, _ in val])
        off = (1 - est[:, 0]) * est[:, 1]
        got = np.array([restored(unveil(y, a, A), x) for (x, y, _, _), (a, A) in zip(val, est)])
        d = got[:, 0] - base[:, 0]
        gains.append(d.mean())
        print(f"seed_{seed}_seconds={time.time() - t0:.0f}")
        print(f"seed_{seed}_r_a={np.corrcoef(drawn_a, est[:, 0])[0, 1]:.2f}")
        print(f"seed_{seed}_r_offset={np.corrcoef(drawn_off, off)[0, 1]:.2f}")
        print(f"seed_{seed}_offset_mae={np.abs(off - drawn_off).mean():.3f}")
        print(f"seed_{seed}_estimated_veil_removed_psnr={got[:, 0].mean():.2f}")
        print(f"seed_{seed}_estimated_minus_y_db={ci95(d)}")
        for k, name in enumerate(names):
            print(f"seed_{seed}_estimated_minus_y_db_{name}={d[image == k].mean():+.2f}")
    print(f"estimated_minus_y_db={np.mean(gains):+.2f}")


if __name__ == "__main__":
    main()
