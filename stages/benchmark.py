"""The benchmark command: every method on any folder of images and any kernel file.

    python -m stages.benchmark --images DIR --kernels FILE --noise 1,3,5,7 --out DIR [--params params.yaml]
        [--limit N] [--pairing all|cycle] [--gray] [--methods a,b,...] [--model PATH] [--tuned PATH]
        [--oracle-trials N] [--seed S] [--no-mismatch] [--noise-mode varying --spread S]
        [--ablation-model PATH]

The protocol is the ``evaluate`` stage's (``pipeline.evaluation``), with its settings
(``evaluate.ircnn_iters``, ``dpir_iters``, ``nominal_sigma``) read from ``--params``. Noise is
drawn from a fixed seed per (image, kernel, level); ``--limit N`` takes the first N images in
sorted order. ``--pairing cycle`` blurs the i-th image (sorted) with the (i mod K)-th of the K
kernels only: every image and every kernel appear in K times fewer samples, each one identical to
the same sample under the default ``all`` (every image with every kernel). It uses the models
and the tuned schedules that ``dvc repro`` produced (``models/<task>/seed-<S>/model.pt`` and the
controls beside it, ``tuned/<task>/seed-<S>.yaml``) unless told otherwise; ``--seeds 0,1,2`` scores every seed's set on the same samples and adds the
spread over seeds and the paired comparisons with 95 % intervals to ``metrics.json``
(``comparisons``), as ``evaluate`` does. ``oracle_per_image`` searches the schedule per degraded
image against its ground truth (Optuna, in memory, seeded, in the ``tune`` stage's space), the
IRCNN and DPIR rules at every level the plug-and-play methods were told and every tuned schedule
queued first, and keeps the best of the search and of every fixed-form method's output on that
image: it bounds the pre-trained denoiser's fixed-form schedules (``oracle_per_image_ft`` the
same with the learned model's fine-tuned denoiser, bounding the ``*_ft`` methods). Writes ``metrics.json``,
``per_image.csv``, ``table.md`` and the mismatch table (true noise 3 %, the non-blind methods
told 1-5 %): ``mismatch.json``/``.md``. Colour images are evaluated on their grey conversion
when the model is grey.

``--noise-mode varying`` draws a smooth noise-level map per sample whose mean is the level
(``--spread`` its relative amplitude): no scalar level describes it, so the ``*_true`` rules
and ``optuna_per_noise`` are told its mean, ``true_sigma_map`` gets the map itself. The local-map
methods put the classical local estimate (``pipeline.physics.noise.local_level_map``) where a map
is read: ``ircnn_estimated_map`` (the IRCNN rule driven by it), ``learned_estimated_map`` (the
learned model's networks with it in place of the proxy's map) and ``estimated_map_guidance`` (the
``estimated_guidance`` control with it in place of its scalar): the proxy's classical rivals.
``--ablation-model`` is a model trained end to end without guidance (``model.guidance: none``);
it runs as ``no_guidance``. When ``optuna_global``, ``oracle_per_image`` and ``learned`` all ran,
``summary.json`` says how much of the gap between the first two the learned method closes.

Rain and haze run on real pairs instead:

    python -m stages.benchmark --task derain --pairs DIR --out DIR [--model PATH]
        [--ablation-model PATH] [--limit N] [--methods a,b,...]

``DIR`` holds ``rain/`` and ``norain/`` (``hazy/`` and ``clear/`` for dehaze) with matching
names (the Rain100H layout, ``rain-001.png`` / ``norain-001.png``, matches too; an unmatched
name is an error). Methods (with no ``--methods``): ``input``, ``learned``, every control found
beside the model (``no_guidance``, ``estimated_guidance``, ``direct_cnn``; ``--ablation-model``
names a ``no_guidance`` model elsewhere), ``classical`` and, for rain, ``dgsm``; the same
``metrics.json`` shape with no noise levels, ``per_image.csv``, ``table.md``.

PSNR is capped at ``pipeline.metrics.PSNR_CAP_DB`` (identical pairs): ``metrics.json``'s ``psnr_capped``
names the capped samples. Each sample's scores go to ``OUT/per_image.partial.jsonl`` once scored: a re-run
with the same settings (``--limit`` aside) resumes from it, with others starts over; the tables replace it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.baselines.tuning import oracle_starts, restore_with_schedule, schedule_objective, schedule_space
from pipeline.checkpoint import load_control, load_model
from pipeline.config import CONTROLS, Params
from pipeline.datasets import Sample, blurred_samples, pair_samples
from pipeline.device import pick_device
from pipeline.evaluation import CONTROL_OF, FT_METHODS, ORACLE, ORACLE_CANDIDATES, ORACLE_FT, Methods, benchmark_tables, \
    best_output, evaluate, mean_psnr, merge_seeds, method_names, mismatch_markdown, needs_tuned, select_methods
from pipeline.generators.seeds import derive_seed
from pipeline.io import PAIR_LAYOUTS
from stages.common import TaskPaths, fill_paths, load_params, log, parser, run_main
from stages.optuna_adapter import search

BENCH_METHODS = method_names("deblur", benchmark=True)
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
    p.add_argument("--pairing", default="all", choices=("all", "cycle"),
                   help="all: every image with every kernel; cycle: the i-th image (sorted) with kernel i mod K only")
    p.add_argument("--gray", action="store_true", help="evaluate on the grey conversion")
    p.add_argument("--methods", default="", help=f"subset of: {','.join(BENCH_METHODS)}")
    p.add_argument("--model", default=None, help="trained model (checkpoint path; default models/<task>/seed-<base.seed>/model.pt); "
                                                  "its controls are read from beside it (<control>/model.pt) where present")
    p.add_argument("--tuned", default=None, help="the tune stage's winners (default tuned/<task>/seed-<base.seed>.yaml)")
    p.add_argument("--seeds", default="", help="training seeds, comma-separated: each seed's models/<task>/seed-<S>/ and "
                                               "tuned/<task>/seed-<S>.yaml (instead of --model, --tuned)")
    p.add_argument("--oracle-trials", type=int, default=24,
                   help="Optuna trials per image for the oracles (at least the queued rules and tuned schedules)")
    p.add_argument("--seed", type=int, default=None, help="noise and oracle seed (default base.seed)")
    p.add_argument("--no-mismatch", action="store_true", help="skip the mismatch table")
    p.add_argument("--noise-mode", default="constant", choices=("constant", "varying"),
                   help="constant: one level per image; varying: a smooth map whose mean is the level")
    p.add_argument("--spread", type=float, default=0.8, help="varying mode: relative amplitude of the map")
    p.add_argument("--ablation-model", default="", help="model trained with guidance 'none': runs as no_guidance "
                                                           "(default: the no_guidance/ folder beside the model, if any)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="default base.device")
    args = p.parse_args(argv)
    params = load_params(args.params, args.task)
    args.task = params.base.task
    args.seed = params.base.seed if args.seed is None else args.seed
    if args.seeds and (args.model or args.tuned or args.ablation_model):
        p.error("--seeds reads each seed's models and tuned schedules: not with --model, --tuned, --ablation-model")
    fill_paths(args, args.task, params.base.seed, model="model", tuned="tuned")
    if args.task == "deblur" and not (args.images and args.kernels):
        p.error("--task deblur needs --images and --kernels")
    if args.task != "deblur" and not args.pairs:
        p.error(f"--task {args.task} needs --pairs DIR (with {'/ and '.join(PAIR_LAYOUTS[args.task])}/)")
    return args, params


def image_kernels(images: list[Path], kernels: list[tuple[str, np.ndarray]], pairing: str
                  ) -> list[tuple[Path, list[tuple[str, np.ndarray]]]]:
    """Each image with the kernels it is blurred with: all of them (``all``), or the (i mod K)-th
    for the i-th image (``cycle``: every kernel used when there are at least K images)."""
    if pairing == "cycle":
        return [(image, [kernels[i % len(kernels)]]) for i, image in enumerate(images)]
    return [(image, kernels) for image in images]


@dataclass(frozen=True)
class SeedRun:
    """One training seed's files: the learned model, its tuned schedules, its control models."""

    seed: int
    model: Path
    tuned: Path
    controls: dict[str, Path]


def seed_runs(args: argparse.Namespace) -> list[SeedRun]:
    """``--seeds``: ``models/<task>/seed-<S>/`` and ``tuned/<task>/seed-<S>.yaml`` of each; else
    the one ``--model`` and ``--tuned`` (its seed read from the ``train.json`` beside it, 0 if none).
    The controls are the models beside each (``<control>/model.pt``, where present);
    ``--ablation-model`` names the ``no_guidance`` one instead."""
    if args.seeds:
        runs = [SeedRun(s, TaskPaths(args.task, s).model, TaskPaths(args.task, s).tuned, {})
                for s in (int(v) for v in args.seeds.split(",") if v.strip())]
    else:
        beside = Path(args.model).parent / "train.json"
        seed = io.read_json(beside).get("seed", 0) if beside.is_file() else 0
        runs = [SeedRun(int(seed), Path(args.model), Path(args.tuned), {})]
    for run in runs:
        run.controls.update({c: run.model.parent / c / "model.pt" for c in CONTROLS
                             if (run.model.parent / c / "model.pt").is_file()})
        if args.ablation_model:
            run.controls["no_guidance"] = Path(args.ablation_model)
    return runs


def oracle_extra(names: Sequence[str], tuned: dict, model, denoiser, device, cfg, max_iterations: int, trials: int,
                 seed: int):
    """The per-image oracles as an ``extras`` hook: per sample, Optuna searches the schedule family
    against the ground truth, every rule the plug-and-play methods were told (nominal, true,
    estimated level) and every tuned schedule queued first; the output is the best of the search
    and of every fixed-form method's own output on that sample, so it is never below any of them
    (``oracle_per_image``: the pre-trained denoiser's methods; ``oracle_per_image_ft``: the
    fine-tuned one's, the ``*_ft`` methods)."""
    space = schedule_space(max_iterations)

    def oracle(sample: Sample, res) -> dict:
        told = [cfg.nominal_sigma, 100 * float(sample.target.mean()), 100 * res.estimated_sigma]
        starts = oracle_starts(tuned, told, max_iterations)
        out = {}
        for name, prior, fixed in ((ORACLE, denoiser, ORACLE_CANDIDATES), (ORACLE_FT, model.denoiser, FT_METHODS)):
            if name not in names:
                continue
            best = search(None, space, schedule_objective([sample], prior, device), max(trials, len(starts)),
                          derive_seed(seed, name, sample.sample_id) % 2**31, initial=starts).best_params
            candidates = {"search": restore_with_schedule(sample, best, prior, device),
                          **{m: res.outputs[m] for m in fixed if m in res.outputs}}
            out[name] = best_output(candidates, sample)[1]
        return out

    return oracle


def main(argv: list[str] | None = None) -> None:
    args, params = parse_args(argv)
    cfg, deblur = params.evaluate, args.task == "deblur"
    runs = seed_runs(args)
    names = select_methods(BENCH_METHODS if deblur else method_names(args.task),
                           [m for m in args.methods.split(",") if m],
                           set.intersection(*(set(r.controls) for r in runs)))
    if deblur:
        levels = [float(v) for v in args.noise.split(",") if v.strip()]
        images, kernels = io.list_images(args.images)[: max(args.limit, 0) or None], io.read_kernels(args.kernels)
        blur_plan = image_kernels(images, kernels, args.pairing)
    else:
        pairs = io.list_pairs(args.pairs, *PAIR_LAYOUTS[args.task])[: max(args.limit, 0) or None]
    n = sum(len(ks) for _, ks in blur_plan) * len(levels) if deblur else len(pairs)
    device = pick_device(args.device or params.base.device)
    # shared: with several seeds, the methods no seed changes run once per sample (pipeline.evaluation.Methods)
    results, shared = [], ({} if len(runs) > 1 else None)
    with io.atomic_dir(args.out) as out:
        for run in runs:
            model, denoiser, state = load_model(run.model, task=args.task, device=device)
            needed = {CONTROL_OF[m] for m in names if m in CONTROL_OF}  # estimated_map_guidance: estimated_guidance's
            controls = {c: load_control(path, args.task, c, device) for c, path in run.controls.items() if c in needed}
            tuned = io.read_yaml(run.tuned) if needs_tuned(names) else None
            methods = Methods(args.task, names, model, device, denoiser, controls, tuned, cfg.nominal_sigma / 100.0,
                              cfg.ircnn_iters, cfg.dpir_iters, mismatch=deblur and not args.no_mismatch, shared=shared)
            oracle = (oracle_extra(names, tuned, model, denoiser, device, cfg, params.tune.max_iterations,
                                   args.oracle_trials, args.seed) if {ORACLE, ORACLE_FT} & set(names) else None)
            journal = Path(args.out) / (JOURNAL if len(runs) == 1 else f"per_image.partial.seed-{run.seed}.jsonl")
            settings = {**{k: v for k, v in vars(args).items() if k not in ("out", "limit", "quiet", "params")},
                        "names": names, "evaluate": cfg, "oracle_space": params.tune.max_iterations, "tuned": tuned,
                        "models": [io.sha256_file(f) for f in (run.model, *run.controls.values())]}  # fingerprinted
            done, stale = io.open_journal(journal, settings)
            if stale:
                log.info("%s: written under other settings, starting over", journal)
            gray = args.gray or int(state["channels"]) == 1
            samples = (chain.from_iterable(blurred_samples([image], ks, levels, args.seed, args.noise_mode, args.spread,
                                                           gray) for image, ks in blur_plan)
                       if deblur else pair_samples(pairs))
            results.append(evaluate(tqdm(samples, total=n, desc=f"benchmark seed {run.seed}", disable=args.quiet),
                                    methods, oracle, with_id=False, done={r["sample_id"]: r for r in done},
                                    on_scored=lambda sample, scored, j=journal, st=settings: io.append_journal(j, st, scored),
                                    seed=run.seed))
        result = merge_seeds(results)
        summary, table, mismatch = benchmark_tables(result, args.noise_mode if deblur else args.pairs)
        io.write_json(out / "metrics.json", result.metrics)
        io.write_csv(out / "per_image.csv", result.rows)
        io.write_text(out / "table.md", table)
        if summary:
            io.write_json(out / "summary.json", summary)
        if mismatch:
            io.write_json(out / "mismatch.json", mismatch)
            io.write_text(out / "mismatch.md", mismatch_markdown(mismatch))
    log.info("benchmark %s (seeds %s): %d images, %d of %d samples resumed from its journal; levels %s %%; mean PSNR %s",
             args.task, [r.seed for r in runs], result.metrics["n_images"], result.n_resumed, n * len(runs),
             result.levels, mean_psnr(result.metrics))


if __name__ == "__main__":
    run_main(main)
