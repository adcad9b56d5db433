"""Inference time of the learned K-stage model against 30-iteration IRCNN plug-and-play.

    python benchmarks/inference_speed.py [--model models/deblur/seed-0/model.pt] [--size 256] [--kernels 2]
        [--noise 3] [--iterations 30] [--device auto]

Both on the same degraded images (scikit-image photographs, grey, centre-cropped to --size,
blurred circularly by generated kernels, white noise of --noise percent, all seeded). The
plug-and-play run uses the pre-trained denoiser stored in the checkpoint (the one the model
started from), is told the noise level the classical wavelet estimator finds in ``y`` (the
``ircnn_estimated`` method: blind, like the learned model), and its time includes that estimate.
The learned model is timed through ``pipeline.enhance.deblur`` (what the enhance command runs).
PSNR with the kernel's half-size cropped. Needs a trained model: run ``dvc repro`` first.

Prints ``key=value`` lines, the last ``time_ratio_vs_pnp30`` (learned time / plug-and-play
time, both summed over the same images in this run).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.baselines.pnp import run_schedule  # noqa: E402
from pipeline.physics.noise import estimate_noise_level  # noqa: E402
from pipeline.baselines.schedules import ircnn_schedule  # noqa: E402
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.data import load_skimage, to_channels  # noqa: E402
from pipeline.device import autocast, pick_device  # noqa: E402
from pipeline.enhance import deblur  # noqa: E402
from pipeline.generators.kernels import sample_kernel  # noqa: E402
from pipeline.metrics import kernel_crop, psnr  # noqa: E402
from pipeline.physics.blur import BlurPhysics  # noqa: E402
from pipeline.synthesis import blur_circular  # noqa: E402

IMAGES = ("camera", "astronaut", "coffee", "brick")  # camera is held out of training


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(size, h, w)
    r, c = (h - s) // 2, (w - s) // 2
    return img[r:r + s, c:c + s]


def samples(size: int, n_kernels: int, noise: float, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, x (1, H, W), y (1, H, W), kernel)`` for every image and kernel, seeded."""
    rng = np.random.default_rng(seed)
    kernels = [sample_kernel(rng, 0.6, 25).kernel for _ in range(n_kernels)]
    out = []
    for name in IMAGES:
        x = np.moveaxis(centre_crop(to_channels(load_skimage(name), gray=True), size), -1, 0)
        for i, k in enumerate(kernels):
            y = blur_circular(x, k) + noise * rng.standard_normal(x.shape).astype(np.float32)
            out.append((f"{name}/k{i}", x, y.astype(np.float32), k))
    return out


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "deblur" / "model.pt"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--kernels", type=int, default=2)
    p.add_argument("--noise", type=float, default=3.0, help="percent")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"no trained model at {args.model}: run `dvc repro` first (or pass --model)")
    device = pick_device(args.device)
    model, denoiser, _ = load_model(args.model, task="deblur", device=device)
    if denoiser is None:
        sys.exit(f"{args.model} holds no pre-trained denoiser for the plug-and-play baseline")
    data = samples(args.size, args.kernels, args.noise / 100.0, args.seed)

    def learned(y, k):
        return deblur(model, y, k).x

    def pnp(y, k):
        level = estimate_noise_level(y[0].cpu().numpy())
        with autocast(device):
            return run_schedule(BlurPhysics(y, k), denoiser, ircnn_schedule(level, args.iterations)).x.float()

    y0, k0 = torch.from_numpy(data[0][2])[None].to(device), torch.from_numpy(data[0][3]).to(device)
    learned(y0, k0), pnp(y0, k0)  # warm-up (allocator, kernels), not timed
    scores: dict[str, list[float]] = {"learned": [], "pnp": []}
    seconds = {"learned": 0.0, "pnp": 0.0}
    for _, x, y, k in data:
        yt, kt = torch.from_numpy(y)[None].to(device), torch.from_numpy(k).to(device)
        crop = kernel_crop(k.shape)
        for name, fn in (("learned", learned), ("pnp", pnp)):  # interleaved: contention hits both alike
            out, dt = timed(lambda: fn(yt, kt), device)
            seconds[name] += dt
            scores[name].append(psnr(out[0, 0].cpu().numpy(), x[0], crop))

    print(f"device={device}")
    print(f"n_samples={len(data)}")
    print(f"image_size={args.size}")
    print(f"noise_percent={args.noise}")
    print(f"stages={model.stages}")
    print(f"pnp_iterations={args.iterations}")
    print(f"learned_psnr={np.mean(scores['learned']):.3f}")
    print(f"pnp{args.iterations}_psnr={np.mean(scores['pnp']):.3f}")
    print(f"psnr_gain_db={np.mean(scores['learned']) - np.mean(scores['pnp']):.3f}")
    print(f"learned_seconds_per_image={seconds['learned'] / len(data):.4f}")
    print(f"pnp{args.iterations}_seconds_per_image={seconds['pnp'] / len(data):.4f}")
    print(f"time_ratio_vs_pnp{args.iterations}={seconds['learned'] / seconds['pnp']:.4f}")


if __name__ == "__main__":
    main()
