"""DVC stage ``degrade``: degrade the validation and test images (blur + noise, rain or haze, by
``base.task``), record every draw.

    python -m stages.degrade --params params.yaml --task deblur --prepared data/deblur/prepared --out data/deblur/degraded

Test and validation: every image of the split x ``kernels.per_image`` kernels x every
``noise.test_levels`` level (validation at the same levels, so baselines can be tuned per level).
Training patches are degraded on the fly by the same code (``pipeline.synthesis``).
Writes ``samples/<id>.npz`` (``y``, ``sigma``, ``kernel``; exact float32), ``images/<id>.png``
(a clipped 8-bit preview), ``kernels/<kernel_id>.png`` and ``samples.csv``.

Rain and haze (``base.task`` derain / dehaze): every image of the split x ``rain.per_image`` /
``haze.per_image`` draws; ``samples/<id>.npz`` holds ``y``, ``target`` (the guidance map the
proxy learns: the streak density / the transmission correction log(t / t_dcp)) and the drawn truth
(``streaks``, ``density`` / ``t``, ``airlight``, ``depth``). Haze uses a depth map per image from
``haze.depth_folder`` when given (named like the image, downscaled as ``prepare`` downscaled
the image; another size is an error), else the depth proxy.

Real pairs (``prepare.source: pairs``): each val/test image's real observation (``prepared/observed``)
is its one sample, ``samples/<split>-<name>.npz`` holding ``y`` alone (no guidance truth is known).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.config import DegradeConfig, Params
from pipeline.data import chw_to_hwc, hwc_to_chw, limit_size
from pipeline.generators.kernels import KernelSample, sample_kernel
from pipeline.generators.seeds import derive_seed, rng_for
from pipeline.synthesis import degrade, degrade_task, task_spec
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def kernels_for(image: str, split: str, cfg: DegradeConfig, seed: int, file_kernels: list[tuple[str, np.ndarray]]) -> list[tuple[str, KernelSample]]:
    """The ``per_image`` kernels of one image (``val_per_image`` in the val split), drawn from its
    own seeded stream."""
    rng = rng_for(seed, "kernels", split, image)
    count = cfg.kernels.val_per_image if split == "val" else cfg.kernels.per_image
    if file_kernels:
        idx = rng.choice(len(file_kernels), size=min(count, len(file_kernels)), replace=False)
        return [(file_kernels[i][0], KernelSample(file_kernels[i][1], "file", {"source": cfg.kernels.file}))
                for i in sorted(idx)]
    out = []
    for j in range(count):
        k = sample_kernel(rng, cfg.kernels.motion_fraction, cfg.kernels.max_size)
        out.append((f"{split}-{image}-k{j}", k))
    return out


def degrade_blur(cfg: DegradeConfig, seed: int, prepared: Path, manifest: list[dict], out: Path, quiet: bool) -> list[dict]:
    """Blur + noise every val/test image (``kernels.per_image`` kernels x ``noise.test_levels``)."""
    file_kernels = io.read_kernels(cfg.kernels.file) if cfg.kernels.source == "file" else []
    jobs = []
    for row in manifest:
        if row["split"] in ("test", "val"):
            jobs += [(row, row["split"], level) for level in cfg.noise.test_levels]
    records = []
    for row, split, level in tqdm(jobs, desc="degrade", disable=quiet):
        x = hwc_to_chw(io.read_image(prepared / "images" / f"{row['name']}.png", gray=int(row["channels"]) == 1))
        for kernel_id, kernel in kernels_for(row["name"], split, cfg, seed, file_kernels):
            s_seed = derive_seed(seed, "sample", split, row["name"], kernel_id, level)
            rng = np.random.default_rng(s_seed)
            lvl = level / 100.0
            try:
                sample = degrade(x, kernel, lvl, cfg.noise.mode, cfg.noise.spread, rng)
            except ValueError as exc:
                raise io.InputError(f"{row['origin']}: {exc}") from exc
            sid = f"{split}-{row['name']}-{kernel_id.split('-')[-1]}-n{lvl * 100:.1f}"
            io.save_npz(out / "samples" / f"{sid}.npz", y=sample.y, sigma=sample.sigma_map, kernel=sample.kernel)
            io.write_image(out / "images" / f"{sid}.png", chw_to_hwc(sample.y))
            kpath = out / "kernels" / f"{kernel_id}.png"
            if not kpath.exists():
                io.write_image(kpath, sample.kernel / sample.kernel.max())
            records.append({"sample_id": sid, "split": split, "image": row["name"], "kernel_id": kernel_id,
                            **sample.record, "seed": s_seed, "kernel_params": json.dumps(kernel.params)})
    return records


def depth_maps(folder: str, names: list[str], max_side: int) -> dict[str, tuple[Path, np.ndarray]]:
    """``{image name: (file, depth (H, W))}`` from ``folder`` (files named like the images),
    downscaled as ``prepare`` downscales images. Raises InputError for an image without one."""
    files = {p.stem: p for p in io.list_images(folder)}
    missing = [n for n in names if n not in files]
    if missing:
        raise io.InputError(f"{folder}: no depth map for {', '.join(missing[:5])} (degrade.haze.depth_folder)")
    return {n: (files[n], limit_size(io.read_image(files[n], gray=True), max_side)[..., 0]) for n in names}


def degrade_tasks(params: Params, prepared: Path, manifest: list[dict], out: Path, quiet: bool) -> list[dict]:
    """Rain or haze on every val/test image (``per_image`` draws each); returns the sample rows."""
    spec, seed, task = task_spec(params.base.task, params.degrade), params.base.split_seed, params.base.task
    per_image = params.degrade.rain.per_image if task == "derain" else params.degrade.haze.per_image
    rows = [r for r in manifest if r["split"] in ("test", "val")]
    folder = params.degrade.haze.depth_folder if task == "dehaze" else ""
    depths = depth_maps(folder, [r["name"] for r in rows], params.prepare.max_side) if folder else {}
    records = []
    for row in tqdm(rows, desc="degrade", disable=quiet):
        x = hwc_to_chw(io.read_image(prepared / "images" / f"{row['name']}.png", gray=False))
        for j in range(per_image):
            sid = f"{row['split']}-{row['name']}-{task[2]}{j}"
            s_seed = derive_seed(seed, "sample", task, row["split"], row["name"], j)
            depth_file, depth = depths.get(row["name"], (None, None))
            try:
                sample = degrade_task(x, spec, np.random.default_rng(s_seed), depth)
            except ValueError as exc:
                raise io.InputError(f"{depth_file or row['origin']}: {exc}") from exc
            io.save_npz(out / "samples" / f"{sid}.npz", y=sample.y, target=sample.target, **sample.truth)
            io.write_image(out / "images" / f"{sid}.png", chw_to_hwc(sample.y))
            records.append({"sample_id": sid, "split": row["split"], "image": row["name"], "variant": j,
                            **sample.record, "target_mean": round(float(sample.target.mean()), 6), "seed": s_seed})
    return records


def degrade_pairs(prepared: Path, manifest: list[dict], out: Path, quiet: bool) -> list[dict]:
    """Real pairs (``prepare.source: pairs``): every val/test image's observation taken as it is,
    one sample each, with no guidance target (none is known); returns the sample rows."""
    records = []
    for row in tqdm([r for r in manifest if r["split"] in ("test", "val")], desc="degrade", disable=quiet):
        y = hwc_to_chw(io.read_image(prepared / "observed" / f"{row['name']}.png", gray=False))
        sid = f"{row['split']}-{row['name']}"
        io.save_npz(out / "samples" / f"{sid}.npz", y=y)
        io.write_image(out / "images" / f"{sid}.png", chw_to_hwc(y))
        records.append({"sample_id": sid, "split": row["split"], "image": row["name"], "variant": 0,
                        "source": "pair", "observed": row["observed"]})
    return records


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", default=None, help="output of the prepare stage (default data/<task>/prepared)")
    p.add_argument("--out", default=None, help="output folder (default data/<task>/degraded)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    fill_paths(args, params.base.task, prepared="prepared", out="degraded")
    cfg, seed = params.degrade, params.base.split_seed
    with stage_run("degrade", params) as tracker:
        manifest = io.read_csv(Path(args.prepared) / "manifest.csv")
        with io.atomic_dir(args.out) as out:
            if params.prepare.source == "pairs":
                records = degrade_pairs(Path(args.prepared), manifest, out, args.quiet)
            elif params.base.task == "deblur":
                records = degrade_blur(cfg, seed, Path(args.prepared), manifest, out, args.quiet)
            else:
                records = degrade_tasks(params, Path(args.prepared), manifest, out, args.quiet)
            io.write_csv(out / "samples.csv", records)
        tracker.log_metrics({"n_val": sum(r["split"] == "val" for r in records),
                             "n_test": sum(r["split"] == "test" for r in records)})
        tracker.log_artifact(Path(args.out) / "samples.csv")
        log.info("wrote %d degraded samples to %s", len(records), args.out)


if __name__ == "__main__":
    run_main(main)
