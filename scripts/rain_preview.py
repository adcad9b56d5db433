"""Judge the synthetic rain against real rain: a preview grid and a few numbers per source.

    python scripts/rain_preview.py [--images coffee,chelsea,astronaut] [--side 192] [--seed 0]
        [--real DIR] [--n-real 3] --out preview.png

Draws rain on the skimage colour images in both styles of ``degrade.rain.style`` (``light``, the
default ranges; ``heavy``, :func:`pipeline.generators.rain.heavy_spec`), and with ``--real DIR``
(``rain/`` + ``norain/``, the Rain100H layout) takes centre crops of the first ``--n-real`` real
pairs. Writes one grid (a row per source: clean, then rainy) to ``--out`` and prints ``key=value``
lines per source over every sample it drew or read (real: every pair of ``DIR``): the input's PSNR
on the luma (:func:`pipeline.metrics.luminance`, BT.601, the Y that ``evaluate`` and the benchmark
report) against the clean image, the mean light the rain adds on the luma
(``added_light``) and the fraction of pixels where it adds more than 0.1 (``coverage``); last
``psnr_y_input_heavy`` (the headline: how hard the heavy style is). The real crops stay in the
grid you write; the project ships no real image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import io  # noqa: E402
from pipeline.data import limit_size, load_skimage, to_channels  # noqa: E402
from pipeline.generators.rain import RainSpec, add_rain, heavy_spec  # noqa: E402
from pipeline.metrics import luminance, psnr  # noqa: E402


def figures(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``(rainy, clean)`` pairs ``(H, W, 3)`` -> mean luma PSNR of the input, added light, coverage."""
    ps, light, cover = [], [], []
    for y, x in pairs:
        ly, lx = luminance(y), luminance(x)
        ps.append(psnr(ly, lx))
        added = np.clip(ly - lx, 0, None)
        light.append(added.mean())
        cover.append((added > 0.1).mean())
    return {"psnr_y_input": float(np.mean(ps)), "added_light": float(np.mean(light)), "coverage": float(np.mean(cover))}


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return img[top:top + side, left:left + side]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="coffee,chelsea,astronaut", help="skimage colour images to draw rain on")
    p.add_argument("--side", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=4, help="rain draws per image for the figures (the grid shows the first)")
    p.add_argument("--real", help="a folder with rain/ and norain/ (e.g. your copy of Rain100H)")
    p.add_argument("--n-real", type=int, default=3)
    p.add_argument("--out", required=True, help="the grid, a .png")
    args = p.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in args.images.split(",") if n]
    clean = [limit_size(to_channels(load_skimage(n), gray=False), args.side) for n in names]
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for style, spec in (("light", RainSpec()), ("heavy", heavy_spec())):
        rng = np.random.default_rng(args.seed)
        rows[style] = [(add_rain(np.ascontiguousarray(x.transpose(2, 0, 1)), rng, spec).y.transpose(1, 2, 0), x)
                       for x in clean for _ in range(args.draws)]
    if args.real:
        pairs = io.list_pairs(args.real, "rain", "norain")
        rows["real"] = [(io.read_image(r, gray=False), io.read_image(c, gray=False)) for r, c in pairs]
    shown = {style: pairs[:: args.draws][: len(names)] for style, pairs in rows.items() if style != "real"}
    if "real" in rows:
        shown["real"] = [(centre_crop(y, args.side), centre_crop(x, args.side)) for y, x in rows["real"][: args.n_real]]
    cols = max(len(v) for v in shown.values())
    fig, axes = plt.subplots(len(shown), 2 * cols, figsize=(2.2 * 2 * cols, 2.4 * len(shown)), squeeze=False)
    for r, (style, pairs) in enumerate(shown.items()):
        for c in range(cols):
            for k, (img, label) in enumerate(((pairs[c][1], "clean"), (pairs[c][0], style)) if c < len(pairs) else ()):
                axes[r, 2 * c + k].imshow(np.clip(img, 0, 1))
                axes[r, 2 * c + k].set_title(f"{label}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    with io.atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    for style, pairs in rows.items():
        print(f"n_{style}={len(pairs)}")
        for key, value in figures(pairs).items():
            print(f"{key}_{style}={value:.4f}")
    print(f"psnr_y_input_heavy={figures(rows['heavy'])['psnr_y_input']:.3f}")


if __name__ == "__main__":
    main()
