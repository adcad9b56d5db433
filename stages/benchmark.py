"""The benchmark command: every method on any folder of images and any kernel file.

    python -m stages.benchmark --images DIR --kernels FILE --noise 1,3,5,7 --out DIR [--params params.yaml]
        [--limit N] [--gray] [--methods a,b,...] [--model PATH] [--tuned PATH]
        [--oracle-trials N] [--seed S] [--no-mismatch] [--noise-mode varying --spread S]
        [--ablation-model PATH]

The protocol is the ``evaluate`` stage's (``pipeline.evaluation``), with its settings
(``evaluate.ircnn_iters``, ``dpir_iters``, ``nominal_sigma``) read from ``--params``. Noise is
drawn from a fixed seed per (image, kernel, level); ``--limit N`` takes the first N images in
sorted order. It uses the model and the tuned schedules that ``dvc repro`` produced
(``models/<task>/model.pt``, ``tuned/deblur.yaml``) unless told otherwise. ``oracle_per_image``
searches the schedule per degraded image against its ground truth (Optuna, in memory, seeded,
in the ``tune`` stage's space, its first trials the tuned global and per-level schedules, so it
is never below them): an upper bound for any fixed-form schedule. Writes ``metrics.json``,
``per_image.csv``, ``table.md`` and the mismatch table (true noise 3 %, the non-blind methods
told 1-5 %): ``mismatch.json``/``.md``. Colour images are evaluated on their grey conversion
when the model is grey.

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
name is an error). Methods ``input``, ``learned``, ``classical`` and, with ``--ablation-model``,
``no_guidance``: the same ``metrics.json`` shape with no noise levels, ``per_image.csv``, ``table.md``.

PSNR is capped at ``pipeline.metrics.PSNR_CAP_DB`` (identical pairs): ``metrics.json``'s ``psnr_capped``
names the capped samples. Each sample's scores go to ``OUT/per_image.partial.jsonl`` once scored: a re-run
with the same settings (``--limit`` aside) resumes from it, with others starts over; the tables replace it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from pipeline import io
from pipeline.baselines.tuning import restore_with_schedule, schedule_objective, schedule_space
from pipeline.checkpoint import load_ablation, load_model
from pipeline.config import Params
from pipeline.datasets import Sample, blurred_samples, pair_samples
from pipeline.device import pick_device
from pipeline.evaluation import ORACLE, Methods, benchmark_tables, evaluate, mean_psnr, method_names, \
    mismatch_markdown, needs_tuned, per_noise_params, select_methods
from pipeline.generators.seeds import derive_seed
from pipeline.io import PAIR_LAYOUTS
from stages.common import fill_paths, load_params, log, parser, run_main
from stages.optuna_adapter import search

BENCH_METHODS = method_names("deblur", oracle=True)
JOURNAL = "per_image.partial.jsonl"  # per-sample scores as they come: a killed run resumes from it


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Params]:
    """The arguments, and the params file resolved for ``--task`` (default its ``base.task``)."""
    p = parser(__doc__)
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
    p.add_argument("--seed", type=int, default=None, help="noise and oracle seed (default base.seed)")
    p.add_argument("--no-mismatch", action="store_true", help="skip the mismatch table")
    p.add_argument("--noise-mode", default="constant", choices=("constant", "varying"),
                   help="constant: one level per image; varying: a smooth map whose mean is the level")
    p.add_argument("--spread", type=float, default=0.8, help="varying mode: relative amplitude of the map")
    p.add_argument("--ablation-model", default="", help="model trained with guidance 'none': runs as no_guidance")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="default base.device")
    args = p.parse_args(argv)
    params = load_params(args.params, args.task)
    args.task = params.base.task
    args.seed = params.base.seed if args.seed is None else args.seed
    fill_paths(args, args.task, model="model", tuned="tuned")
    if args.task == "deblur" and not (args.images and args.kernels):
        p.error("--task deblur needs --images and --kernels")
    if args.task != "deblur" and not args.pairs:
        p.error(f"--task {args.task} needs --pairs DIR (with {'/ and '.join(PAIR_LAYOUTS[args.task])}/)")
    return args, params


def main(argv: list[str] | None = None) -> None:
    args, params = parse_args(argv)
    cfg, deblur = params.evaluate, args.task == "deblur"
    names = select_methods(BENCH_METHODS if deblur else method_names(args.task),
                           [m for m in args.methods.split(",") if m], bool(args.ablation_model))
    if deblur:
        levels = [float(v) for v in args.noise.split(",") if v.strip()]
        images, kernels = io.list_images(args.images)[: max(args.limit, 0) or None], io.read_kernels(args.kernels)
    else:
        pairs = io.list_pairs(args.pairs, *PAIR_LAYOUTS[args.task])[: max(args.limit, 0) or None]
    n = len(images) * len(kernels) * len(levels) if deblur else len(pairs)
    device = pick_device(args.device or params.base.device)
    model, denoiser, state = load_model(args.model, task=args.task, device=device)
    ablation = load_ablation(args.ablation_model, args.task, device) if args.ablation_model else None
    tuned = io.read_yaml(args.tuned) if needs_tuned(names) else None
    methods = Methods(args.task, names, model, device, denoiser, ablation, tuned, cfg.nominal_sigma / 100.0,
                      cfg.ircnn_iters, cfg.dpir_iters, mismatch=deblur and not args.no_mismatch)

    def oracle(sample: Sample, res) -> dict:
        """The per-image oracle: the schedule searched against the sample's ground truth."""
        best = search(None, schedule_space(params.tune.max_iterations), schedule_objective([sample], denoiser, device),
                      max(args.oracle_trials, 2), derive_seed(args.seed, "oracle", sample.sample_id) % 2**31,
                      initial=[tuned["global"], per_noise_params(tuned, sample.noise_level)]).best_params
        return {ORACLE: restore_with_schedule(sample, best, denoiser, device)}

    journal = Path(args.out) / JOURNAL
    settings = {**{k: v for k, v in vars(args).items() if k not in ("out", "limit", "quiet", "params")}, "names": names,
                "evaluate": cfg, "oracle_space": params.tune.max_iterations, "tuned": tuned,  # inputs: fingerprinted
                "models": [io.sha256_file(f) for f in (args.model, args.ablation_model) if f]}
    done, stale = io.open_journal(journal, settings)
    if stale:
        log.info("%s: written under other settings, starting over", journal)
    with io.atomic_dir(args.out) as out:
        samples = (blurred_samples(images, kernels, levels, args.seed, args.noise_mode, args.spread, args.gray or
                                   int(state["channels"]) == 1) if deblur else pair_samples(pairs))
        result = evaluate(tqdm(samples, total=n, desc="benchmark", disable=args.quiet), methods,
                          oracle if ORACLE in names else None, with_id=False, done={r["sample_id"]: r for r in done},
                          on_scored=lambda sample, scored: io.append_journal(journal, settings, scored))
        summary, table, mismatch = benchmark_tables(result, args.noise_mode if deblur else args.pairs)
        io.write_json(out / "metrics.json", result.metrics)
        io.write_csv(out / "per_image.csv", result.rows)
        io.write_text(out / "table.md", table)
        if summary:
            io.write_json(out / "summary.json", summary)
        if mismatch:
            io.write_json(out / "mismatch.json", mismatch)
            io.write_text(out / "mismatch.md", mismatch_markdown(mismatch))
    log.info("benchmark %s: %d images, %d of %d samples resumed from its journal; levels %s %%; mean PSNR %s", args.task,
             result.metrics["n_images"], result.n_resumed, n, result.levels, mean_psnr(result.metrics))


if __name__ == "__main__":
    run_main(main)
