"""DVC stage ``evaluate``: every method on the test split (the protocol of ``pipeline.evaluation``).

    python -m stages.evaluate --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --models models/deblur --tuned tuned/deblur --out results/deblur

Deblurring methods: ``input``, ``learned`` (the trained unfolded model), IRCNN and DPIR
plug-and-play with the pre-trained denoiser told a nominal level (``*_blind``), the true one
(``*_true``) or the one ``skimage.restoration.estimate_sigma`` estimates from the input
(``*_estimated``), ``true_sigma_map`` (the IRCNN rule driven by the true per-pixel noise map), the
``tune`` stage's schedules and classical knobs (``tuned.yaml``). Writes ``metrics.json`` (every
method, level and comparison), ``headline.json`` (the few numbers ``dvc metrics show`` and ``dvc exp
show`` list: :func:`pipeline.report.headline`), ``per_image.csv``, ``psnr_by_noise.csv`` (``dvc plots``), ``guidance.csv`` (the
proxy's map against the true one), ``stages.csv`` (learned rho_k and guidance per stage) and ``visuals/``.

Rain and haze (``base.task`` derain / dehaze): ``input``, ``learned``, ``classical`` (median
filtering / the dark channel prior with a guided filter); ``metrics.json`` has the same shape with
no noise levels (``psnr_mean``/``ssim_mean`` over every test sample); ``evaluate.real_folder``
photos are restored for the report. Every task: the controls of ``tasks.controls``
(``no_guidance``, ``estimated_guidance``: the ``ablate`` stage's models, the same model trained
with only its guidance replaced; ``direct_cnn``: a plain CNN of the same size on the same
batches); deblurring also ``ircnn_estimated_ft`` and
``optuna_per_noise_ft`` (those baselines with the learned model's fine-tuned denoiser).

Seeds: every training seed of ``base.seeds`` is scored on the same test samples with its own
models and tuned schedules (``<models>/seed-<S>``, ``<tuned>/seed-<S>.yaml``); ``metrics.json``
holds the means over samples x seeds, the spread over seeds (``*_std_seeds``) and ``comparisons``:
the paired difference of every headline pair with its 95 % interval (``ci_method``); the rows of
``per_image.csv``, ``stages.csv`` and ``guidance.csv`` carry a ``seed`` column. Visuals and the
real photos are the first seed's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.checkpoint import load_control, load_model
from pipeline.data import hwc_to_chw, limit_size
from pipeline.datasets import iter_split, sample_rows
from pipeline.device import pick_device, set_threads
from pipeline.evaluation import Methods, evaluate, mean_psnr, merge_seeds, method_names, needs_tuned, restore_task, \
    select_methods, visual_arrays
from pipeline.report import headline
from stages.common import fill_paths, log, load_params, parser, run_main, seed_folder
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


def seed_methods(params, args, seed: int, names: tuple[str, ...] | None, device, shared: dict | None = None) -> Methods:
    """The methods of one training seed: ``<models>/seed-<seed>/model.pt`` (``learned``, its
    pre-trained denoiser for plug-and-play), the controls of ``tasks.controls`` beside it
    (``<control>/model.pt``: each must exist) and ``<tuned>/seed-<seed>.yaml``. ``shared``: the
    outputs of the methods no seed changes, kept across seeds (:class:`~pipeline.evaluation.Methods`)."""
    task, cfg = params.base.task, params.evaluate
    folder = seed_folder(args.models, seed)
    model, denoiser, _ = load_model(folder / "model.pt", task=task, device=device)
    controls = {}
    for control in params.tasks.controls:
        path = folder / control / "model.pt"
        if not path.is_file():
            raise io.InputError(f"{path}: missing, and tasks.controls names {control}: train it with "
                                f"`dvc repro ablate@{task}-{seed}-{control}` "
                                f"(python -m stages.train --task {task} --seed {seed} --control {control})")
        controls[control] = load_control(path, task, control, device)
    names = names or select_methods(method_names(task), [], controls)
    tuned = io.read_yaml(Path(args.tuned) / f"seed-{seed}.yaml") if needs_tuned(names) else None
    return Methods(task, names, model, device, denoiser, controls, tuned, cfg.nominal_sigma / 100.0,
                   cfg.ircnn_iters, cfg.dpir_iters, shared=shared)


def main() -> None:
    p = parser(__doc__, data=True)
    p.add_argument("--models", default=None, help="the task's models, one seed-<S> folder per seed (default models/<task>)")
    p.add_argument("--tuned", default=None, help="the tune stage's winners, seed-<S>.yaml per seed (default tuned/<task>)")
    p.add_argument("--out", default=None, help="default results/<task>")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    task, cfg, seeds = params.base.task, params.evaluate, params.base.seeds
    fill_paths(args, task, prepared="prepared", degraded="degraded", models="models_root", tuned="tuned_root",
               out="results")
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    rows = sample_rows(args.degraded, "test")
    if not rows:
        raise io.InputError(f"{Path(args.degraded) / 'samples.csv'}: no test samples")
    visual_ids = pick_visuals(rows, cfg.n_visuals)

    with stage_run("evaluate", params, {"device": str(device), "seeds": ",".join(map(str, seeds))}) as tracker:
        with io.atomic_dir(args.out) as out:
            # with several seeds, the methods no seed changes run once per sample (pipeline.evaluation.Methods)
            results, names, first_model, shared = [], None, None, ({} if len(seeds) > 1 else None)
            for seed in seeds:
                methods = seed_methods(params, args, seed, names, device, shared)
                names = methods.names  # every seed runs the methods of the first
                first_model = first_model if results else methods.model

                def write_visual(sample, res, seed=seed) -> None:
                    if seed == seeds[0] and sample.sample_id in visual_ids:  # the first seed's outputs
                        io.save_npz(out / "visuals" / f"{sample.sample_id}.npz", **visual_arrays(sample, res))

                samples = tqdm(iter_split(args.prepared, args.degraded, rows), total=len(rows),
                               desc=f"evaluate seed {seed}", disable=args.quiet)
                results.append(evaluate(samples, methods, extras=write_visual, seed=seed))
                log.info("%s seed %d: mean PSNR %s", task, seed, mean_psnr(results[-1].metrics))
            result = merge_seeds(results)
            metrics = {**result.metrics, **result.guidance_metrics,
                       # what the samples are, as the degrade stage wrote them (prepare.source: pairs
                       # -> real pairs, whose proxy learned from the outer loss alone: no guidance truth)
                       "data": "real pairs" if rows[0].get("source") == "pair" else "synthetic"}
            if task != "deblur" and cfg.real_folder:
                metrics["n_real"] = restore_real(task, cfg, first_model, device, out / "real", args.quiet)
            io.write_json(out / "metrics.json", metrics)
            io.write_json(out / "headline.json", headline(metrics, task))
            io.write_csv(out / "per_image.csv", result.rows)
            io.write_csv(out / "guidance.csv", result.guidance_rows)
            io.write_csv(out / "stages.csv", result.stage_rows)
            if result.levels:
                io.write_csv(out / "psnr_by_noise.csv", result.level_rows)
        tracker.log_metrics({**{f"{m}/{k}": v[k] for m, v in metrics["methods"].items() for k in ("psnr_mean", "ssim_mean")},
                             **{f"{c['a']}-vs-{c['b']}/diff_psnr": c["diff_mean"] for c in metrics["comparisons"]},
                             **result.guidance_metrics})
        tracker.log_artifact(Path(args.out) / "metrics.json")
        tracker.log_artifact(Path(args.out) / "per_image.csv")
        log.info("%s (%d seed%s): mean PSNR %s", task, len(seeds), "s" * (len(seeds) > 1), mean_psnr(metrics))


if __name__ == "__main__":
    run_main(main)
