"""DVC stage ``prepare``: load the dataset, split it, write images and a manifest.

Grey unless ``prepare.color``; rain and haze (``base.task`` derain / dehaze) are colour tasks,
so their images always keep colour.

    python -m stages.prepare --params params.yaml --task deblur --out data/deblur/prepared
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import PrepareConfig
from pipeline.data import SKIMAGE_DEFAULT, assign_splits, limit_size, load_skimage, to_channels
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def sources(cfg: PrepareConfig) -> list[tuple[str, str]]:
    """``(name, origin)`` pairs: ``skimage:camera`` or a file path. Names are unique."""
    if cfg.source == "skimage":
        return [(n, f"skimage:{n}") for n in (cfg.images or SKIMAGE_DEFAULT)]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for folder in cfg.folders:
        for path in io.list_images(folder):
            name = path.stem if path.stem not in seen else f"{Path(folder).name}_{path.stem}"
            if name in seen:
                raise io.InputError(f"{path}: two images named '{name}' in prepare.folders")
            seen.add(name)
            pairs.append((name, str(path)))
    return pairs


def load(origin: str, gray: bool, max_side: int) -> np.ndarray:
    """``(H, W, C)`` float32 image from its origin, converted and downscaled."""
    if origin.startswith("skimage:"):
        try:
            img = load_skimage(origin.split(":", 1)[1])
        except ValueError as exc:
            raise io.InputError(f"prepare.images: {exc}") from exc
        img = to_channels(img, gray)
    else:
        img = io.read_image(origin, gray=gray)
    return limit_size(img, max_side)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default=None, help="output folder (images/ + manifest.csv; default data/<task>/prepared)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    fill_paths(args, params.base.task, out="prepared")
    cfg = params.prepare
    with stage_run("prepare", params) as tracker:
        items = sources(cfg)
        try:
            splits = assign_splits([n for n, _ in items], cfg.split.test, cfg.split.val, params.base.split_seed, cfg.holdout)
        except ValueError as exc:
            raise io.InputError(f"prepare.split: {exc}") from exc
        rows = []
        with io.atomic_dir(args.out) as out:
            for name, origin in items:
                img = load(origin, gray=not (cfg.color or params.base.task != "deblur"), max_side=cfg.max_side)
                path = out / "images" / f"{name}.png"
                io.write_image(path, img, bits=16)
                rows.append({"name": name, "origin": origin, "split": splits[name], "height": img.shape[0],
                             "width": img.shape[1], "channels": img.shape[2], "sha256": io.sha256_file(path)})
            io.write_csv(out / "manifest.csv", rows)
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        tracker.log_metrics({f"n_{s}": c for s, c in counts.items()})
        tracker.log_artifact(Path(args.out) / "manifest.csv")
        log.info("prepared %d images (%s) in %s", len(rows), counts, args.out)


if __name__ == "__main__":
    run_main(main)
