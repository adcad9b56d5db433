"""Which window for the classical local noise-map estimate? Chosen on the validation split.

    python scripts/local_window.py [--project .] [--windows 16,24,32,48,64,96] [--kernels 6]
        [--levels 1,3,5,7] [--spread 0.8] [--seed 7] [--model PATH]

Blurs the project's validation images (``data/deblur/prepared``, split val, grey) with generated
kernels (the pipeline's own mixture, ``--kernels`` of them from ``--seed``) and adds spatially
varying noise (``--spread``, the benchmark's ``--noise-mode varying``) at each level, then scores
:func:`pipeline.physics.noise.local_level_map` at each window against the drawn noise map: the mean
absolute error relative to the map's mean, over every pixel of every sample. The scalar estimate
(``estimate_noise_level``, a constant map) is scored beside it, and with ``--model`` the proxy of
that trained model (its ``estimate_guidance``). ``key=value`` lines, ``best_window`` last.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import io  # noqa: E402
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.datasets import blurred_samples, read_manifest  # noqa: E402
from pipeline.generators.kernels import sample_kernel  # noqa: E402
from pipeline.physics.noise import estimate_noise_level, local_level_map  # noqa: E402


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean ``|estimate - truth|`` over the pixels, relative to the mean of ``truth (1, H, W)``."""
    return float(np.abs(estimate - truth).mean() / truth.mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", type=Path, default=ROOT, help="the project whose prepared data to read")
    p.add_argument("--windows", default="16,24,32,48,64,96")
    p.add_argument("--kernels", type=int, default=6)
    p.add_argument("--levels", default="1,3,5,7", help="noise levels, percent")
    p.add_argument("--spread", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model", type=Path, default=None, help="a trained deblurring model: score its proxy too")
    args = p.parse_args(argv)

    prepared = args.project / "data" / "deblur" / "prepared"
    try:
        images = [prepared / "images" / f"{r['name']}.png" for r in read_manifest(prepared) if r["split"] == "val"]
    except io.InputError as exc:
        p.exit(2, f"error: {exc} (run `dvc repro` there first)\n")
    if not images:
        p.exit(2, f"error: no validation images in {prepared / 'manifest.csv'}\n")
    rng = np.random.default_rng(args.seed)
    kernels = [(f"g{i}", sample_kernel(rng).kernel) for i in range(args.kernels)]
    levels = [float(v) for v in args.levels.split(",")]
    windows = [int(v) for v in args.windows.split(",")]
    model = load_model(args.model, task="deblur", device=torch.device("cpu"))[0] if args.model else None

    errors: dict[str, list[float]] = {}
    n = 0
    for s in blurred_samples(images, kernels, levels, args.seed, "varying", args.spread, gray=True):
        n += 1
        for window in windows:
            errors.setdefault(f"window_{window}", []).append(relative_error(local_level_map(s.y, window), s.target))
        errors.setdefault("scalar", []).append(relative_error(np.full_like(s.target, estimate_noise_level(s.y)),
                                                              s.target))
        if model is not None:
            with torch.no_grad():
                proxy = model.estimate_guidance(torch.from_numpy(s.y)[None])[0].numpy()
            errors.setdefault("proxy", []).append(relative_error(proxy, s.target))
    print(f"images={','.join(i.stem for i in images)}")
    print(f"samples={n}")
    means = {k: float(np.mean(v)) for k, v in errors.items()}
    for k, v in means.items():
        print(f"rel_mae_{k}={v:.4f}")
    print(f"best_window={min(windows, key=lambda w: means[f'window_{w}'])}")


if __name__ == "__main__":
    main()
