"""DVC stage ``evaluate``: every method on the test split (the protocol of ``pipeline.evaluation``).

    python -m stages.evaluate --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --models models/deblur --tuned tuned/deblur.yaml --out results/deblur

Deblurring methods: ``input``, ``learned`` (the trained unfolded model), IRCNN and DPIR
plug-and-play with the pre-trained denoiser told a nominal level (``*_blind``), the true one
(``*_true``) or the one ``skimage.restoration.estimate_sigma`` estimates from the input
(``*_estimated``), ``true_sigma_map`` (the IRCNN rule driven by the true per-pixel noise map), the
``tune`` stage's schedules and classical knobs (``tuned.yaml``). Writes ``metrics.json`` (``dvc
metrics show``), ``per_image.csv``, ``psnr_by_noise.csv`` (``dvc plots``), ``guidance.csv`` (the
proxy's map against the true one), ``stages.csv`` (learned rho_k and guidance per stage) and ``visuals/``.

Rain and haze (``base.task`` derain / dehaze): ``input``, ``learned``, ``classical`` (median
filtering / the dark channel prior with a guided filter); ``metrics.json`` has the same shape with
no noise levels (``psnr_mean``/``ssim_mean`` over every test sample); ``evaluate.real_folder``
photos are restored for the report. For every task of ``tasks.ablate``, ``no_guidance``: the model
trained with ``model.guidance: none`` (``--ablation-model``; by default
``<models>/no_guidance/model.pt`` from the ``ablate`` stage).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.checkpoint import load_ablation, load_model
from pipeline.data import hwc_to_chw, limit_size
from pipeline.datasets import iter_split, sample_rows
from pipeline.device import pick_device, set_threads
from pipeline.evaluation import Methods, evaluate, method_names, needs_tuned, restore_task, select_methods, \
    visual_arrays
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def pick_visuals(rows: list[dict], n: int) -> set[str]:
    """``n`` test samples evenly spread over the noise levels, for the report's grid."""
    ordered = sorted(rows, key=lambda r: (float(r.get("noise_level", 0)), r["sample_id"]))
    if n <= 0 or not ordered:
        return set()
    return {ordered[int(i)]["sample_id"] for i in np.linspace(0, len(ordered) - 1, min(n, len(ordered))).round()}


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
        io.save_npz(out / f"{path.stem}.npz", input=y, target_estimate=res.guidance_estimate,
                    **{f"method__{m}": o for m, o in res.outputs.items() if m != "input"})
    log.info("%s: restored %d real photos from %s", task, len(paths), cfg.real_folder)
    return len(paths)


def ablation_path(params, args) -> str:
    """``--ablation-model``, or for the tasks of ``tasks.ablate`` the ``ablate`` stage's model."""
    if args.ablation_model or params.base.task not in params.tasks.ablate:
        return args.ablation_model
    path = Path(args.models) / "no_guidance" / "model.pt"
    if not path.is_file():
        task = params.base.task
        raise io.InputError(f"{path}: missing, and tasks.ablate names {task}: train it with "
                            f"`dvc repro ablate@{task}` (python -m stages.train --task {task} --guidance none)")
    return str(path)


def main() -> None:
    p = parser(__doc__, data=True)
    p.add_argument("--models", default=None, help="default models/<task>")
    p.add_argument("--tuned", default=None, help="the tune stage's winners (default tuned/<task>.yaml)")
    p.add_argument("--out", default=None, help="default results/<task>")
    p.add_argument("--ablation-model", default="",
                   help="a model trained with guidance 'none', evaluated as no_guidance (default for "
                        "the tasks of tasks.ablate: <models>/no_guidance/model.pt)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    task, cfg = params.base.task, params.evaluate
    fill_paths(args, task, prepared="prepared", degraded="degraded", models="models", tuned="tuned", out="results")
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    model, denoiser, _ = load_model(Path(args.models) / "model.pt", task=task, device=device)
    ablation = load_ablation(path, task, device) if (path := ablation_path(params, args)) else None
    names = select_methods(method_names(task), [], ablation is not None)
    tuned = io.read_yaml(args.tuned) if needs_tuned(names) else None
    methods = Methods(task, names, model, device, denoiser, ablation, tuned, cfg.nominal_sigma / 100.0,
                      cfg.ircnn_iters, cfg.dpir_iters)
    rows = sample_rows(args.degraded, "test")
    if not rows:
        raise io.InputError(f"{Path(args.degraded) / 'samples.csv'}: no test samples")
    visual_ids = pick_visuals(rows, cfg.n_visuals)

    with stage_run("evaluate", params, {"device": str(device)}) as tracker:
        with io.atomic_dir(args.out) as out:
            def write_visual(sample, res) -> None:
                if sample.sample_id in visual_ids:
                    io.save_npz(out / "visuals" / f"{sample.sample_id}.npz", **visual_arrays(sample, res))

            samples = tqdm(iter_split(args.prepared, args.degraded, rows), total=len(rows), desc="evaluate",
                           disable=args.quiet)
            result = evaluate(samples, methods, extras=write_visual)
            metrics = {**result.metrics, **result.guidance_metrics}
            if task != "deblur" and cfg.real_folder:
                metrics["n_real"] = restore_real(task, cfg, model, device, out / "real", args.quiet)
            io.write_json(out / "metrics.json", metrics)
            io.write_csv(out / "per_image.csv", result.rows)
            io.write_csv(out / "guidance.csv", result.guidance_rows)
            io.write_csv(out / "stages.csv", result.stage_rows)
            if result.levels:
                io.write_csv(out / "psnr_by_noise.csv", result.level_rows)
        tracker.log_metrics({**{f"{m}/{k}": v[k] for m, v in metrics["methods"].items() for k in ("psnr_mean", "ssim_mean")},
                             **result.guidance_metrics})
        tracker.log_artifact(Path(args.out) / "metrics.json")
        tracker.log_artifact(Path(args.out) / "per_image.csv")
        log.info("%s: mean PSNR %s", task, {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()})


if __name__ == "__main__":
    run_main(main)
