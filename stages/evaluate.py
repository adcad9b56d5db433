"""DVC stage ``evaluate``: every method on the test split, PSNR/SSIM per noise level.

    python -m stages.evaluate --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --models models/deblur --tuned tuned/deblur.yaml --out results/deblur

Methods: ``input``, ``learned`` (the trained unfolded model), IRCNN and DPIR plug-and-play with
the pre-trained denoiser told a nominal level (``*_blind``), the true one (``*_true``) or the
one ``skimage.restoration.estimate_sigma`` estimates from the input (``*_estimated``), and
``true_sigma_map`` (the IRCNN rule driven by the true per-pixel noise map).
Writes ``metrics.json`` (``dvc metrics show``), ``per_image.csv``, ``psnr_by_noise.csv``
(``dvc plots``), ``stages.csv`` (learned rho_k and guidance per stage) and ``visuals/``.

Rain and haze (``base.task`` derain / dehaze): ``input``, ``learned``, ``classical`` (median
filtering / the dark channel prior with a guided filter) and ``no_guidance``: the model trained
with ``model.guidance: none`` (``--ablation-model``; by default, for the tasks of
``tasks.ablate``, ``<models>/no_guidance/model.pt`` from the ``ablate`` stage); ``metrics.json`` has the same
shape with no noise levels (``psnr_mean``/``ssim_mean`` over every test sample), and
``guidance.csv`` scores the proxy's map against the true one (density / transmission correction). There
is nothing to tune for them: ``tuned.yaml`` is not read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.checkpoint import load_ablation, load_model
from pipeline.data import hwc_to_chw, limit_size
from pipeline.device import pick_device, set_threads
from pipeline.evaluation import ALL_METHODS, TASK_METHODS, aggregate, restore, restore_task, score
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def pick_visuals(rows: list[dict], n: int) -> set[str]:
    """``n`` test samples evenly spread over the noise levels, for the report's grid."""
    ordered = sorted(rows, key=lambda r: (float(r.get("noise_level", 0)), r["sample_id"]))
    if n <= 0 or not ordered:
        return set()
    return {ordered[int(i)]["sample_id"] for i in np.linspace(0, len(ordered) - 1, min(n, len(ordered))).round()}


def test_samples(degraded: Path) -> list[dict]:
    tests = [r for r in io.read_csv(degraded / "samples.csv") if r["split"] == "test"]
    if not tests:
        raise io.InputError(f"{degraded / 'samples.csv'}: no test samples")
    return tests


def each_sample(tests: list[dict], prepared: Path, degraded: Path, quiet: bool):
    """``(row, arrays of samples/<id>.npz, clean image (C, H, W))`` per test sample, with a progress bar."""
    for r in tqdm(tests, desc="evaluate", disable=quiet):
        s = io.load_npz(degraded / "samples" / f"{r['sample_id']}.npz")
        yield r, s, hwc_to_chw(io.read_image(prepared / "images" / f"{r['image']}.png", gray=s["y"].shape[0] == 1))


def restore_real(task: str, cfg, model, device, out: Path, quiet: bool) -> int:
    """Restore every photo of ``cfg.real_folder`` (real rain / haze, no ground truth) by ``learned``
    and ``classical``; writes ``out/<name>.npz`` (``input``, ``method__*``, the proxy's map) for
    the report. Returns the number of photos; an empty or unreadable folder is an InputError."""
    try:
        paths = io.list_images(cfg.real_folder)
    except io.InputError as exc:
        raise io.InputError(f"evaluate.real_folder: {exc}") from exc
    for path in tqdm(paths, desc="real photos", disable=quiet):
        y = hwc_to_chw(limit_size(io.read_image(path, gray=False), cfg.real_max_side))
        res = restore_task(task, y, model, device)
        io.save_npz(out / f"{path.stem}.npz", input=y, target_estimate=res.noise_estimate,
                    **{f"method__{m}": o for m, o in res.outputs.items() if m != "input"})
    log.info("%s: restored %d real photos from %s", task, len(paths), cfg.real_folder)
    return len(paths)


def evaluate_task(params, args, device) -> None:
    """The rain / haze evaluation (see the module's docstring)."""
    task, cfg = params.base.task, params.evaluate
    prepared, degraded = Path(args.prepared), Path(args.degraded)
    model = load_model(Path(args.models) / "model.pt", task=task, device=device)[0]
    ablation_path = args.ablation_model
    if not ablation_path and task in params.tasks.ablate:  # the ablate stage's model, next to the learned one
        ablation_path = Path(args.models) / "no_guidance" / "model.pt"
        if not ablation_path.is_file():
            raise io.InputError(f"{ablation_path}: missing, and tasks.ablate names {task}: train it with "
                                f"`dvc repro ablate@{task}` (python -m stages.train --task {task} --guidance none)")
    ablation = load_ablation(ablation_path, task, device) if ablation_path else None
    methods = [m for m in TASK_METHODS if m != "no_guidance" or ablation is not None]
    tests = test_samples(degraded)
    visual_ids = pick_visuals(tests, cfg.n_visuals)
    with stage_run("evaluate", params, {"device": str(device)}) as tracker:
        rows, stage_rows, guidance_rows = [], [], []
        with io.atomic_dir(args.out) as out:
            for r, s, x in each_sample(tests, prepared, degraded, args.quiet):
                res = restore_task(task, s["y"], model, device, ablation, s["target"])
                for m, sc in score(res.outputs, x, (1, 1)).items():
                    rows.append({"sample_id": r["sample_id"], "image": r["image"], "method": m, **sc})
                target = s["target"][0]
                guidance_rows.append({"sample_id": r["sample_id"], "mae": float(np.abs(res.noise_estimate - target).mean()),
                                      "true_mean": float(target.mean()), "estimate_mean": float(res.noise_estimate.mean())})
                for k, g in enumerate(res.guidance):
                    stage_rows.append({"sample_id": r["sample_id"], "stage": k + 1, "rho": float(res.rhos[k]),
                                       "guidance_mean_255": float(g.mean()) * 255, "guidance_std_255": float(g.std()) * 255})
                if r["sample_id"] in visual_ids:
                    io.save_npz(out / "visuals" / f"{r['sample_id']}.npz", ground_truth=x, target_true=target,
                                target_estimate=res.noise_estimate, **{f"method__{m}": o for m, o in res.outputs.items()},
                                **{f"guidance__{k + 1}": g for k, g in enumerate(res.guidance)})
            metrics = aggregate(rows, [], methods)
            metrics["task"] = task
            metrics["guidance_mae"] = float(np.mean([g["mae"] for g in guidance_rows]))
            if cfg.real_folder:
                metrics["n_real"] = restore_real(task, cfg, model, device, out / "real", args.quiet)
            io.write_json(out / "metrics.json", metrics)
            io.write_csv(out / "per_image.csv", rows)
            io.write_csv(out / "guidance.csv", guidance_rows)
            io.write_csv(out / "stages.csv", stage_rows)
        flat = {f"{m}/{k}": v[k] for m, v in metrics["methods"].items() for k in ("psnr_mean", "ssim_mean")}
        tracker.log_metrics({**flat, "guidance_mae": metrics["guidance_mae"]})
        tracker.log_artifact(Path(args.out) / "metrics.json")
        tracker.log_artifact(Path(args.out) / "per_image.csv")
        log.info("%s: mean PSNR %s", task, {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()})


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", default=None, help="default data/<task>/prepared")
    p.add_argument("--degraded", default=None, help="default data/<task>/degraded")
    p.add_argument("--models", default=None, help="default models/<task>")
    p.add_argument("--tuned", default=None, help="the tune stage's winners (default tuned/<task>.yaml)")
    p.add_argument("--out", default=None, help="default results/<task>")
    p.add_argument("--ablation-model", default="",
                   help="rain/haze: a model trained with guidance 'none', evaluated as no_guidance (default for "
                        "the tasks of tasks.ablate: <models>/no_guidance/model.pt)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    fill_paths(args, params.base.task, prepared="prepared", degraded="degraded", models="models", tuned="tuned",
               out="results")
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    if params.base.task != "deblur":
        evaluate_task(params, args, device)
        return
    cfg = params.evaluate
    prepared, degraded = Path(args.prepared), Path(args.degraded)
    model, denoiser, _ = load_model(Path(args.models) / "model.pt", task=params.base.task, device=device)
    if denoiser is None:
        raise io.InputError(f"{args.models}/model.pt has no pre-trained denoiser for the plug-and-play baselines")
    tests = test_samples(degraded)
    visual_ids = pick_visuals(tests, cfg.n_visuals)
    tuned = io.read_yaml(args.tuned)

    with stage_run("evaluate", params, {"device": str(device)}) as tracker:
        rows, stage_rows, guidance_err = [], [], []
        with io.atomic_dir(args.out) as out:
            for r, s, x in each_sample(tests, prepared, degraded, args.quiet):
                res = restore(s["y"], s["kernel"], s["sigma"], model, denoiser, device, cfg.nominal_sigma / 100.0,
                              cfg.ircnn_iters, cfg.dpir_iters, ALL_METHODS, tuned)
                scores = score(res.outputs, x, s["kernel"].shape)
                for m, sc in scores.items():
                    rows.append({"sample_id": r["sample_id"], "image": r["image"], "kernel_id": r["kernel_id"],
                                 "noise_level": float(r["noise_level"]), "method": m, **sc})
                mae = float(np.abs(res.noise_estimate - s["sigma"][0]).mean()) * 255
                guidance_err.append({"noise_level": float(r["noise_level"]), "mae_255": mae,
                                     "estimated_sigma_255": res.estimated_sigma * 255})
                for k, g in enumerate(res.guidance):
                    stage_rows.append({"sample_id": r["sample_id"], "noise_level": float(r["noise_level"]), "stage": k + 1,
                                       "rho": float(res.rhos[k]), "guidance_mean_255": float(g.mean()) * 255,
                                       "guidance_std_255": float(g.std()) * 255})
                if r["sample_id"] in visual_ids:
                    io.save_npz(out / "visuals" / f"{r['sample_id']}.npz", ground_truth=x, kernel=s["kernel"],
                                sigma_true=s["sigma"][0], noise_estimate=res.noise_estimate,
                                **{f"method__{m}": o for m, o in res.outputs.items()},
                                **{f"guidance__{k + 1}": g for k, g in enumerate(res.guidance)})
            levels = sorted({float(r["noise_level"]) for r in tests})
            metrics = aggregate(rows, levels, list(ALL_METHODS))
            metrics["guidance_mae_255"] = float(np.mean([g["mae_255"] for g in guidance_err]))
            metrics["estimated_sigma_mae_255"] = float(np.mean(
                [abs(g["estimated_sigma_255"] - g["noise_level"] * 2.55) for g in guidance_err]))
            io.write_json(out / "metrics.json", metrics)
            io.write_csv(out / "per_image.csv", rows)
            io.write_csv(out / "guidance.csv", guidance_err)
            io.write_csv(out / "stages.csv", stage_rows)
            io.write_csv(out / "psnr_by_noise.csv", [
                {"noise_level": lvl, "method": m, "psnr": metrics["methods"][m]["psnr"].get(f"{lvl:g}")}
                for lvl in levels for m in ALL_METHODS])
        flat = {f"{m}/psnr_mean": v["psnr_mean"] for m, v in metrics["methods"].items()}
        flat.update({f"{m}/ssim_mean": v["ssim_mean"] for m, v in metrics["methods"].items()})
        flat["guidance_mae_255"] = metrics["guidance_mae_255"]
        tracker.log_metrics(flat)
        tracker.log_artifact(Path(args.out) / "metrics.json")
        tracker.log_artifact(Path(args.out) / "per_image.csv")
        means = {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()}
        log.info("mean PSNR over %s %%: %s", levels, means)


if __name__ == "__main__":
    run_main(main)
