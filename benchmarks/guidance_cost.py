"""What one guidance map costs: the proxy's pass against the classical local estimate.

    python benchmarks/guidance_cost.py [--model models/deblur/seed-0/model.pt] [--sizes 256,512]
        [--window 32] [--repeats 5] [--device auto]

On a noisy grey image (scikit-image's camera, resized to each size, white noise at 5 %) times
the learned model's proxy (``estimate_guidance``, what the model runs once per image) and
:func:`pipeline.physics.noise.local_level_map` (the classical rival: ``estimate_sigma`` on
half-overlapping windows), each the median of ``--repeats`` runs after one warm-up, and the
scalar ``estimate_noise_level`` for scale. Needs a trained model: run ``dvc repro`` first.

Prints ``key=value`` lines per size, the last ``local_over_proxy_time_<largest size>`` (the local
map's time / the proxy's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.data import load_skimage, to_channels  # noqa: E402
from pipeline.device import pick_device  # noqa: E402
from pipeline.physics.noise import estimate_noise_level, local_level_map, tile_starts  # noqa: E402


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall time covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "deblur" / "seed-0" / "model.pt")
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    model = load_model(args.model, task="deblur", device=device)[0].eval()
    camera = to_channels(load_skimage("camera"), gray=True)[..., 0]
    rng = np.random.default_rng(0)
    print(f"device={device.type}")
    print(f"threads={torch.get_num_threads()}")
    for size in (int(v) for v in args.sizes.split(",")):
        x = resize(camera, (size, size), anti_aliasing=True).astype(np.float32)[None]
        y = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
        yt = torch.from_numpy(y)[None].to(device)
        with torch.no_grad():
            proxy = median_seconds(lambda: model.estimate_guidance(yt), args.repeats, device)
        local = median_seconds(lambda: local_level_map(y, args.window), args.repeats, device)
        scalar = median_seconds(lambda: estimate_noise_level(y), args.repeats, device)
        print(f"windows_{size}={len(tile_starts(size, args.window)) ** 2}")
        print(f"proxy_seconds_{size}={proxy:.4f}")
        print(f"local_map_seconds_{size}={local:.4f}")
        print(f"scalar_seconds_{size}={scalar:.4f}")
        print(f"local_over_proxy_time_{size}={local / proxy:.2f}")


if __name__ == "__main__":
    main()
