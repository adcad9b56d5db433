"""The benchmark command: every method on any folder of images and any kernel file.

    python -m stages.benchmark --images DIR --kernels FILE --noise 1,3,5,7 --out DIR
        [--limit N] [--gray] [--methods a,b,...] [--model PATH] [--tuned PATH]
        [--oracle-trials N] [--seed S] [--no-mismatch] [--noise-mode varying --spread S]
        [--ablation-model PATH]

Noise is drawn from a fixed seed per (image, kernel, level); ``--limit N`` takes the first N
images in sorted order. It uses the model and the tuned schedules that ``dvc repro`` produced
(``models/<task>/model.pt``, ``tuned/deblur.yaml``) unless told otherwise. ``oracle_per_image`` searches the
schedule per degraded image against its ground truth (Optuna, in memory, seeded, its first
trials the tuned global and per-level schedules, so it is never below them): an upper bound
for any fixed-form schedule. Writes ``metrics.json``, ``per_image.csv``, ``table.md`` and the
mismatch table (true noise 3 %, the non-blind methods told 1-5 %): ``mismatch.json``/``.md``.
Colour images are evaluated on their grey conversion when the model is grey.

``--noise-mode varying`` draws a smooth noise-level map per sample whose mean is the level
(``--spread`` its relative amplitude): no scalar level describes it, so the ``*_true`` rules
and ``optuna_per_noise`` are told its mean, ``true_sigma_map`` gets the map itself.
``--ablation-model`` is a model trained end to end without guidance (``model.guidance: none``);
it runs as ``no_guidance``. When ``optuna_global``, ``oracle_per_image`` and ``learned`` all ran,
``summary.json`` says how much of the gap between the first two the learned method closes.

Rain and haze run on real pairs instead:

    python -m stages.benchmark --task derain --pairs DIR --out DIR [--model PATH]
        [--ablation-model PATH] [--limit N] [--methods a,b,...]

``DIR`` holds ``rain/`` and ``norain/`` (``hazy/`` and ``clear/`` for dehaze) with matching
names (the Rain100H layout, ``rain-001.png`` / ``norain-001.png``, matches too; an unmatched
name is an error). Methods ``input``, ``learned``, ``classical`` (median filtering / the dark
channel prior with a guided filter) and, with ``--ablation-model``, ``no_guidance``; the same
``metrics.json`` shape with no noise levels (``psnr_mean``/``ssim_mean`` over the pairs),
``per_image.csv`` and ``table.md``.
"""
from __future__ import annotations

import argparse

import numpy as np
import optuna
import torch
from tqdm import tqdm

from pipeline import io
from pipeline.io import PAIR_LAYOUTS
from pipeline.baselines.pnp import run_schedule
from pipeline.baselines.tuning import LAM_RANGE, S_END_RANGE, S_START_RANGE, TuningSample, schedule_psnr, tuned_schedule
from pipeline.checkpoint import load_ablation, load_model
from pipeline.data import hwc_to_chw
from pipeline.device import pick_device
from pipeline.evaluation import ALL_METHODS, TASK_METHODS, aggregate, level_key, per_noise_params, restore, \
    restore_task, score
from pipeline.generators.kernels import KernelSample
from pipeline.generators.seeds import derive_seed
from pipeline.physics.blur import BlurPhysics
from pipeline.synthesis import degrade
from stages.common import fill_paths, log, run_main

BENCH_METHODS = (*ALL_METHODS, "oracle_per_image", "no_guidance")
MISMATCH_TOLD = (1, 2, 3, 4, 5)
MISMATCH_METHODS = ("ircnn_true", "dpir_true", "optuna_per_noise", "learned")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="deblur", choices=("deblur", *PAIR_LAYOUTS))
    p.add_argument("--images", help="deblur: folder of clean images (PNG/JPEG/TIFF/BMP)")
    p.add_argument("--kernels", help="deblur: kernel file: .mat (v5/v7.3, 'kernels'), .npy, .npz, image or folder")
    p.add_argument("--pairs", help="derain: a folder with rain/ and norain/; dehaze: with hazy/ and clear/")
    p.add_argument("--noise", default="1,3,5,7", help="noise levels, percent of the range, comma-separated")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=0, help="first N images in sorted order (0: all)")
    p.add_argument("--gray", action="store_true", help="evaluate on the grey conversion")
    p.add_argument("--methods", default="", help=f"subset of: {','.join(BENCH_METHODS)}")
    p.add_argument("--model", default=None, help="trained model (checkpoint path; default models/<task>/model.pt)")
    p.add_argument("--tuned", default=None, help="the tune stage's winners (default tuned/<task>.yaml)")
    p.add_argument("--oracle-trials", type=int, default=16, help="Optuna trials per image for oracle_per_image")
    p.add_argument("--ircnn-iters", type=int, default=30)
    p.add_argument("--dpir-iters", type=int, default=8)
    p.add_argument("--nominal-sigma", type=float, default=1.0, help="percent: what the blind baselines are told")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mismatch", action="store_true", help="skip the mismatch table")
    p.add_argument("--noise-mode", default="constant", choices=("constant", "varying"),
                   help="constant: one level per image; varying: a smooth map whose mean is the level")
    p.add_argument("--spread", type=float, default=0.8, help="varying mode: relative amplitude of the map")
    p.add_argument("--ablation-model", default="", help="model trained with guidance 'none': runs as no_guidance")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    fill_paths(args, args.task, model="model", tuned="tuned")
    if args.task == "deblur" and not (args.images and args.kernels):
        p.error("--task deblur needs --images and --kernels")
    if args.task != "deblur" and not args.pairs:
        p.error(f"--task {args.task} needs --pairs DIR (with {'/ and '.join(PAIR_LAYOUTS[args.task])}/)")
    return args


def oracle_schedule(sample: TuningSample, denoiser, device, tuned: dict, trials: int, seed: int) -> np.ndarray:
    """The best schedule for this image against its own ground truth; returns its restoration."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    keys = ("lam", "s_start", "s_end", "iterations")
    study.enqueue_trial({k: tuned["global"][k] for k in keys})
    study.enqueue_trial({k: per_noise_params(tuned, sample.noise_level)[k] for k in keys})

    def objective(trial: optuna.Trial) -> float:
        params = {"lam": trial.suggest_float("lam", *LAM_RANGE, log=True),
                  "s_start": trial.suggest_float("s_start", *S_START_RANGE, log=True),
                  "s_end": trial.suggest_float("s_end", *S_END_RANGE, log=True),
                  "iterations": trial.suggest_int("iterations", 4, 40)}
        return schedule_psnr(params, [sample], denoiser, device)[0]

    study.optimize(objective, n_trials=max(trials, 2))
    b = study.best_params
    physics = BlurPhysics(torch.from_numpy(sample.y)[None].to(device), torch.from_numpy(sample.kernel))
    return run_schedule(physics, denoiser, tuned_schedule(b["lam"], b["s_start"], b["s_end"], b["iterations"])).x[0].cpu().numpy()


def markdown_table(metrics: dict, methods: list[str]) -> str:
    levels = [level_key(l) for l in metrics["noise_levels"]]
    lines = [f"| {'noise (%)' if levels else ''} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for lvl in levels:
        cells = [f"{metrics['methods'][m]['psnr'].get(lvl, float('nan')):.2f} / {metrics['methods'][m]['ssim'].get(lvl, float('nan')):.3f}"
                 for m in methods]
        lines.append(f"| {lvl} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{metrics['methods'][m]['psnr_mean']:.2f} / {metrics['methods'][m]['ssim_mean']:.3f}"
                                           for m in methods) + " |")
    return "\n".join(lines) + "\n"


def gap_summary(metrics: dict) -> dict:
    """How much of the ``optuna_global`` -> ``oracle_per_image`` gap (mean PSNR) ``learned`` closes,
    overall and per noise level (1.0 = reaches the per-image oracle; above 1 = beyond it)."""
    m = metrics["methods"]
    if not all(k in m for k in ("learned", "optuna_global", "oracle_per_image")):
        return {}

    def closed(key: str, level: str | None) -> dict:
        get = (lambda name: m[name][f"{key}_mean"]) if level is None else (lambda name: m[name][key][level])
        lo, hi, ours = get("optuna_global"), get("oracle_per_image"), get("learned")
        return {"optuna_global": lo, "oracle_per_image": hi, "learned": ours,
                "gap_db": hi - lo, "gap_closed": (ours - lo) / (hi - lo) if hi - lo > 1e-9 else None}

    return {"psnr": closed("psnr", None),
            "per_noise": {lvl: closed("psnr", lvl) for lvl in m["learned"]["psnr"] if lvl in m["oracle_per_image"]["psnr"]}}


def benchmark_pairs(args: argparse.Namespace) -> None:
    """Rain or haze removal on real ``(degraded, clean)`` pairs (see the module's docstring)."""
    methods = [m for m in args.methods.split(",") if m] or list(TASK_METHODS)
    unknown = [m for m in methods if m not in TASK_METHODS]
    if unknown:
        raise io.InputError(f"--methods: unknown {unknown} for --task {args.task}; known: {', '.join(TASK_METHODS)}")
    if "no_guidance" in methods and not args.ablation_model:
        if args.methods:
            raise io.InputError("--methods no_guidance needs --ablation-model (a model trained with guidance 'none')")
        methods.remove("no_guidance")
    pairs = io.list_pairs(args.pairs, *PAIR_LAYOUTS[args.task])
    pairs = pairs[: args.limit] if args.limit > 0 else pairs
    device = pick_device(args.device)
    model = load_model(args.model, task=args.task, device=device)[0]
    if model.guidance_mode == "oracle":
        raise io.InputError(f"{args.model}: a model with guidance 'oracle' needs the true map, which real pairs lack")
    ablation = load_ablation(args.ablation_model, args.task, device) if args.ablation_model else None
    rows = []
    with io.atomic_dir(args.out) as out:
        for degraded, clean in tqdm(pairs, desc="benchmark", disable=args.quiet):
            y, x = hwc_to_chw(io.read_image(degraded, gray=False)), hwc_to_chw(io.read_image(clean, gray=False))
            if y.shape != x.shape:
                raise io.InputError(f"{degraded}: {y.shape[1]}x{y.shape[2]}, but its pair {clean} is {x.shape[1]}x{x.shape[2]}")
            outputs = restore_task(args.task, y, model, device, ablation).outputs
            for m, sc in score({m: outputs[m] for m in methods}, x, (1, 1)).items():
                rows.append({"image": clean.stem, "method": m, **sc})
        metrics = {**aggregate(rows, [], methods), "task": args.task}
        io.write_json(out / "metrics.json", metrics)
        io.write_csv(out / "per_image.csv", rows)
        io.write_text(out / "table.md", f"{args.task}: mean PSNR (dB) / SSIM over {metrics['n_images']} pairs of "
                      f"{args.pairs}\n\n" + markdown_table(metrics, methods))
    log.info("benchmark %s: %d pairs; mean PSNR %s", args.task, metrics["n_images"],
             {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.task != "deblur":
        benchmark_pairs(args)
        return
    levels = [float(v) for v in args.noise.split(",") if v.strip()]
    methods = [m for m in args.methods.split(",") if m] or list(BENCH_METHODS)
    unknown = [m for m in methods if m not in BENCH_METHODS]
    if unknown:
        raise io.InputError(f"--methods: unknown {unknown}; known: {', '.join(BENCH_METHODS)}")
    images = io.list_images(args.images)
    images = images[: args.limit] if args.limit > 0 else images
    kernels = io.read_kernels(args.kernels)
    device = pick_device(args.device)
    model, denoiser, state = load_model(args.model, task="deblur", device=device)
    if "no_guidance" in methods and not args.ablation_model and args.methods:
        raise io.InputError("--methods no_guidance needs --ablation-model (a model trained with guidance 'none')")
    if not args.ablation_model:
        methods = [m for m in methods if m != "no_guidance"]
    ablation = load_ablation(args.ablation_model, "deblur", device) if args.ablation_model else None
    needs_tuned = any(m in methods for m in ("optuna_global", "optuna_per_noise", "oracle_per_image",
                                              "wiener", "richardson_lucy", "tv"))
    tuned = io.read_yaml(args.tuned) if needs_tuned else None
    gray = args.gray or int(state["channels"]) == 1
    restore_methods = tuple(m for m in methods if m not in ("oracle_per_image", "no_guidance"))
    rows, mismatch_rows = [], []
    jobs = [(img, kid, k, lvl) for img in images for kid, k in kernels for lvl in levels]
    with io.atomic_dir(args.out) as out:
        for img_path, kid, kernel, level in tqdm(jobs, desc="benchmark", disable=args.quiet):
            x = hwc_to_chw(io.read_image(img_path, gray=gray))
            if kernel.shape[0] > x.shape[1] or kernel.shape[1] > x.shape[2]:
                raise io.InputError(f"{img_path}: image {x.shape[1]}x{x.shape[2]} is smaller than kernel {kid} "
                                    f"({kernel.shape[0]}x{kernel.shape[1]})")
            rng = np.random.default_rng(derive_seed(args.seed, "benchmark", img_path.name, kid, level))
            sample = degrade(x, KernelSample(kernel, "file", {}), level / 100.0, args.noise_mode, args.spread, rng)
            res = restore(sample.y, kernel, sample.sigma_map, model, denoiser, device, args.nominal_sigma / 100.0,
                          args.ircnn_iters, args.dpir_iters, restore_methods, tuned)
            outputs = dict(res.outputs)
            if ablation is not None:
                outputs["no_guidance"] = restore(sample.y, kernel, sample.sigma_map, ablation, denoiser, device,
                                                 args.nominal_sigma / 100.0, methods=("learned",)).outputs["learned"]
            if "oracle_per_image" in methods:
                ts = TuningSample(sample.y, x, kernel, level, f"{img_path.stem}-{kid}-{level:g}")
                outputs["oracle_per_image"] = oracle_schedule(ts, denoiser, device, tuned, args.oracle_trials,
                                                              derive_seed(args.seed, "oracle", ts.sample_id) % 2**31)
            for m, sc in score(outputs, x, kernel.shape).items():
                rows.append({"image": img_path.stem, "kernel_id": kid, "noise_level": level, "method": m, **sc})
            if not args.no_mismatch and abs(level - 3.0) < 1e-9:
                # the non-blind methods run as usual but told another level; learned is blind
                # (told nothing), so its output above serves every row
                told_methods = tuple(m for m in MISMATCH_METHODS if m in methods and m != "learned"
                                     and (tuned is not None or m != "optuna_per_noise"))
                for told in MISMATCH_TOLD:
                    told_map = np.full_like(sample.sigma_map, told / 100.0)
                    told_out = restore(sample.y, kernel, told_map, model, denoiser, device, args.nominal_sigma / 100.0,
                                       args.ircnn_iters, args.dpir_iters, told_methods, tuned).outputs
                    if "learned" in outputs:
                        told_out["learned"] = outputs["learned"]
                    for m, sc in score(told_out, x, kernel.shape).items():
                        mismatch_rows.append({"image": img_path.stem, "kernel_id": kid, "told": told, "method": m,
                                              "psnr": sc["psnr"]})
        metrics = aggregate(rows, levels, methods)
        io.write_json(out / "metrics.json", metrics)
        io.write_csv(out / "per_image.csv", rows)
        summary = gap_summary(metrics)
        if summary:
            io.write_json(out / "summary.json", summary)
        io.write_text(out / "table.md", f"Mean PSNR (dB) / SSIM over {metrics['n_images']} images x "
                      f"{metrics['n_kernels']} kernels, noise {args.noise_mode}\n\n" + markdown_table(metrics, methods)
                      + (f"\nlearned closes {100 * summary['psnr']['gap_closed']:.0f} % of the "
                         f"optuna_global -> oracle_per_image gap ({summary['psnr']['gap_db']:.2f} dB)\n"
                         if summary and summary["psnr"]["gap_closed"] is not None else ""))
        if mismatch_rows:
            present = [m for m in MISMATCH_METHODS if any(r["method"] == m for r in mismatch_rows)]
            table = {m: {str(t): float(np.mean([r["psnr"] for r in mismatch_rows if r["method"] == m and r["told"] == t]))
                         for t in MISMATCH_TOLD} for m in present}
            io.write_json(out / "mismatch.json", {"true_noise": 3, "told": list(MISMATCH_TOLD), "psnr": table})
            md = ["| told (%) | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
            md += [f"| {t} | " + " | ".join(f"{table[m][str(t)]:.2f}" for m in present) + " |" for t in MISMATCH_TOLD]
            io.write_text(out / "mismatch.md", "True noise 3 %; mean PSNR (dB) when told another level\n\n" + "\n".join(md) + "\n")
    log.info("benchmark: %d images x %d kernels x %s %%; mean PSNR %s", metrics["n_images"], metrics["n_kernels"], levels,
             {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()})


if __name__ == "__main__":
    run_main(main)
