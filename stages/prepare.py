"""DVC stage ``prepare``: load the dataset, split it, write images and a manifest.

Grey unless ``prepare.color``; rain and haze (``base.task`` derain / dehaze) are colour tasks,
so their images always keep colour.

``prepare.source: pairs`` (rain and haze) reads real pairs from each folder of ``prepare.folders``:
``rain/`` + ``norain/`` (``hazy/`` + ``clear/``), matched by name as Rain100H names them
(``rain-001.png`` / ``norain-001.png``). The clean image goes to ``images/``, its observation,
downscaled alike, to ``observed/``; ``degrade`` then takes the observations as they are.

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


def sources(cfg: PrepareConfig, task: str = "deblur") -> list[tuple[str, str, str | None]]:
    """``(name, origin, observed)``: origin ``skimage:camera`` or a file path; ``observed`` the
    path of the real degraded partner (``source: pairs``), else None. Names are unique."""
    if cfg.source == "skimage":
        return [(n, f"skimage:{n}", None) for n in (cfg.images or SKIMAGE_DEFAULT)]
    items: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for folder in cfg.folders:
        if cfg.source == "pairs":
            found = [(clean, str(degraded)) for degraded, clean in io.list_pairs(folder, *io.PAIR_LAYOUTS[task])]
        else:
            found = [(path, None) for path in io.list_images(folder)]
        for path, observed in found:
            name = path.stem if path.stem not in seen else f"{Path(folder).name}_{path.stem}"
            if name in seen:
                raise io.InputError(f"{path}: two images named '{name}' in prepare.folders")
            seen.add(name)
            items.append((name, str(path), observed))
    return items


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
        items = sources(cfg, params.base.task)
        try:
            splits = assign_splits([n for n, _, _ in items], cfg.split.test, cfg.split.val, params.base.split_seed, cfg.holdout)
        except ValueError as exc:
            raise io.InputError(f"prepare.split: {exc}") from exc
        rows = []
        with io.atomic_dir(args.out) as out:
            for name, origin, observed in items:
                gray = not (cfg.color or params.base.task != "deblur")
                img = load(origin, gray=gray, max_side=cfg.max_side)
                path = out / "images" / f"{name}.png"
                io.write_image(path, img, bits=16)
                row = {"name": name, "origin": origin, "split": splits[name], "height": img.shape[0],
                       "width": img.shape[1], "channels": img.shape[2], "sha256": io.sha256_file(path)}
                if observed is not None:
                    seen = load(observed, gray=gray, max_side=cfg.max_side)
                    if seen.shape != img.shape:
                        raise io.InputError(f"{observed}: {seen.shape[1]}x{seen.shape[0]}, but its pair {origin} is "
                                            f"{img.shape[1]}x{img.shape[0]}")
                    io.write_image(out / "observed" / f"{name}.png", seen, bits=16)
                    row["observed"] = observed
                rows.append(row)
            io.write_csv(out / "manifest.csv", rows)
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        tracker.log_metrics({f"n_{s}": c for s, c in counts.items()})
        tracker.log_artifact(Path(args.out) / "manifest.csv")
        log.info("prepared %d images (%s) in %s", len(rows), counts, args.out)


if __name__ == "__main__":
    run_main(main)
