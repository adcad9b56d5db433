"""Time and peak memory of the enhance path from 128x128 to 2048x2048, with tiling.

    python benchmarks/scaling.py [--model models/deblur/seed-0/model.pt] [--max-side 2048] [--max-megapixels 0.25]
        [--untiled-up-to 512] [--device auto]

Each size runs in a fresh process (peak memory is a process-wide high-water mark): a grey
photograph tiled up to the size, blurred by a 15x15 kernel, 3 % noise, restored by
``pipeline.enhance.deblur`` with the networks tiled past ``--max-megapixels``. Peak memory is the
peak resident set size (``ru_maxrss``) minus the resident size just before the call (model,
image and kernel loaded), on CUDA ``torch.cuda.max_memory_allocated``. The budget it is checked
against is ``pipeline.enhance.memory_budget``: a fixed number of bytes per pixel for the
whole-image FFT data step and the outputs, plus one tile's network activations. Sizes up to
``--untiled-up-to`` also run untiled, for comparison.

The time exponent is the least-squares slope of log(seconds) over log(pixels), fitted on the
sizes from 256x256 up (the smallest size is dominated by fixed costs). Prints ``key=value``
lines, the last ``time_exponent``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(model_path: str, side: int, max_mp: float, device_name: str) -> dict:
    """Restore one ``side x side`` image; its seconds and peak memory above the loaded state."""
    import torch

    from pipeline.checkpoint import load_model
    from pipeline.data import load_skimage, to_channels
    from pipeline.device import pick_device
    from pipeline.enhance import deblur, memory_budget
    from pipeline.generators.kernels import gaussian_kernel
    from pipeline.physics.blur import BlurPhysics

    device = pick_device(device_name)
    model, _, _ = load_model(model_path, task="deblur", device=device)
    photo = to_channels(load_skimage("camera"), gray=True)[..., 0]
    reps = -(-side // photo.shape[0])
    x = torch.from_numpy(np.tile(photo, (reps, reps))[:side, :side].copy())[None, None].to(device)
    k = torch.from_numpy(gaussian_kernel(2.0, 1.2, 0.3, 15)).to(device)
    y = BlurPhysics(x, k).A(x) + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    del x
    max_pixels = int(max_mp * 1e6) if max_mp > 0 else None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes()
    t0 = time.perf_counter()
    out = deblur(model, y, k, max_pixels=max_pixels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert torch.isfinite(out.x).all()
    return {"side": side, "seconds": seconds, "peak_bytes": max(peak, 0),
            "budget_bytes": memory_budget(model, (side, side), max_pixels)}


def run_worker(args: argparse.Namespace, side: int, max_mp: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(side), "--model", args.model, "--max-megapixels", str(max_mp),
           "--device", args.device]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"size {side} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "deblur" / "model.pt"))
    p.add_argument("--max-side", type=int, default=2048)
    p.add_argument("--max-megapixels", type=float, default=0.25, help="tile the networks past this (the budget)")
    p.add_argument("--untiled-up-to", type=int, default=512, help="also run untiled up to this side")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.max_megapixels, args.device)))
        return
    if not Path(args.model).exists():
        sys.exit(f"no trained model at {args.model}: run `dvc repro` first (or pass --model)")
    sides = [s for s in (128, 256, 512, 1024, 2048) if s <= args.max_side]
    rows = []
    for side in sides:
        r = run_worker(args, side, args.max_megapixels)
        rows.append(r)
        mb = 1 / 2**20
        print(f"side_{side}_seconds={r['seconds']:.3f}")
        print(f"side_{side}_peak_mb={r['peak_bytes'] * mb:.1f}")
        print(f"side_{side}_budget_mb={r['budget_bytes'] * mb:.1f}")
        print(f"side_{side}_bytes_per_pixel={r['peak_bytes'] / side**2:.1f}")
        if side <= args.untiled_up_to and side**2 > args.max_megapixels * 1e6:
            u = run_worker(args, side, 0.0)
            print(f"side_{side}_untiled_seconds={u['seconds']:.3f}")
            print(f"side_{side}_untiled_peak_mb={u['peak_bytes'] * mb:.1f}")
        sys.stdout.flush()
    within = all(r["peak_bytes"] <= r["budget_bytes"] for r in rows)
    fit = [r for r in rows if r["side"] >= 256] if len(rows) >= 3 else rows
    pixels = np.log([r["side"] ** 2 for r in fit])
    slope = float(np.polyfit(pixels, np.log([r["seconds"] for r in fit]), 1)[0])
    print(f"max_megapixels={args.max_megapixels}")
    print(f"peak_within_budget={within}")
    print(f"fitted_sides={','.join(str(r['side']) for r in fit)}")
    print(f"time_exponent={slope:.3f}")


if __name__ == "__main__":
    main()
