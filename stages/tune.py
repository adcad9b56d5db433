"""DVC stage ``tune``: tune the hand-set baselines with Optuna on the validation split.

    python -m stages.tune --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --models models/deblur --out tuned/deblur.yaml

Searches (TPE, seeded, persistent studies that resume): one blind HQS schedule
``(lam, s_start, s_end, K)`` for all noise levels (``optuna_global``), one per noise level
(``optuna_per_noise``, non-blind), and the knob of each classical method (Wiener balance,
Richardson-Lucy iterations, TV weight). The pre-trained denoiser is the prior, as for every
plug-and-play baseline. Writes the winners to ``tuned.yaml``, which ``evaluate`` and the
benchmark command read, so ``dvc repro`` reproduces them. Rain and haze (``base.task``) have
nothing to tune: the stage logs so and writes a ``tuned.yaml`` saying it was skipped.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import optuna
import yaml

from pipeline import io
from pipeline.baselines.tuning import CLASSICAL, LAM_RANGE, S_END_RANGE, S_START_RANGE, TuningSample, \
    classical_psnr, schedule_psnr
from pipeline.checkpoint import load_model
from pipeline.config import TuneConfig
from pipeline.data import hwc_to_chw
from pipeline.device import pick_device, set_threads
from pipeline.evaluation import level_key
from pipeline.generators.seeds import derive_seed, rng_for
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.optuna_adapter import run_study
from stages.tracking import stage_run


def load_samples(prepared: Path, degraded: Path, split: str) -> list[TuningSample]:
    out = []
    for r in io.read_csv(degraded / "samples.csv"):
        if r["split"] != split:
            continue
        s = io.load_npz(degraded / "samples" / f"{r['sample_id']}.npz")
        x = hwc_to_chw(io.read_image(prepared / "images" / f"{r['image']}.png", gray=s["y"].shape[0] == 1))
        out.append(TuningSample(s["y"], x, s["kernel"], float(r["noise_level"]), r["sample_id"]))
    return out


def subset(samples: list[TuningSample], n: int, seed: int, label: str) -> list[TuningSample]:
    if len(samples) <= n:
        return samples
    idx = rng_for(seed, "tune-subset", label).choice(len(samples), size=n, replace=False)
    return [samples[i] for i in sorted(idx)]


def schedule_objective(samples, denoiser, device, cfg: TuneConfig):
    def objective(trial: optuna.Trial) -> float:
        params = {"lam": trial.suggest_float("lam", *LAM_RANGE, log=True),
                  "s_start": trial.suggest_float("s_start", *S_START_RANGE, log=True),
                  "s_end": trial.suggest_float("s_end", *S_END_RANGE, log=True),
                  "iterations": trial.suggest_int("iterations", 4, cfg.max_iterations)}
        return float(np.mean(schedule_psnr(params, samples, denoiser, device)))
    return objective


def rule_schedules(level_percent: float, cfg: TuneConfig) -> list[dict]:
    """The IRCNN and DPIR rules at a noise level, written in the searched family: the searches
    start from them, so a tuned schedule is never worse than the rules on the tuning samples."""
    sigma = level_percent / 100.0
    return [{"lam": sigma**2 / 3, "s_start": 49 / 255, "s_end": sigma, "iterations": min(30, cfg.max_iterations)},
            {"lam": 0.23 * sigma**2, "s_start": 49 / 255, "s_end": sigma, "iterations": 8}]


def classical_objective(method: str, samples):
    _, knob, (lo, hi), integer = CLASSICAL[method]

    def objective(trial: optuna.Trial) -> float:
        value = trial.suggest_int(knob, int(lo), int(hi), log=True) if integer else trial.suggest_float(knob, lo, hi, log=True)
        return float(np.mean(classical_psnr(method, value, samples)))
    return objective


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", default=None, help="default data/<task>/prepared")
    p.add_argument("--degraded", default=None, help="default data/<task>/degraded")
    p.add_argument("--models", default=None, help="default models/<task>")
    p.add_argument("--out", default=None, help="default tuned/<task>.yaml")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    fill_paths(args, params.base.task, prepared="prepared", degraded="degraded", models="models", out="tuned")
    cfg, seed = params.tune, params.base.seed
    if params.base.task != "deblur":
        # the rain and haze baselines have no schedule to search: the DVC output still exists
        with stage_run("tune", params, {"skipped": "true"}) as tracker:
            log.info("task %s: nothing to tune (the hand-set schedules are deblurring baselines); tune skipped",
                     params.base.task)
            io.write_text(args.out, f"# Written by the tune stage: task {params.base.task} has nothing to tune.\n"
                          + yaml.safe_dump({"task": params.base.task, "skipped": True}, sort_keys=False))
            tracker.log_artifact(args.out)
        return
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    model_path = Path(args.models) / "model.pt"
    _, denoiser, _ = load_model(model_path, task=params.base.task, device=device)
    samples = load_samples(Path(args.prepared), Path(args.degraded), "val")
    if not samples:
        raise io.InputError(f"{args.degraded}/samples.csv: no validation samples to tune on (prepare.split.val)")
    # Studies are keyed by what they depend on: another denoiser or other data is another study.
    fingerprint = hashlib.sha256((io.sha256_file(model_path) + io.sha256_file(Path(args.degraded) / "samples.csv")).encode()).hexdigest()[:10]
    prefix = f"{params.base.task}-{fingerprint}"

    with stage_run("tune", params, {"device": str(device), "optuna_storage": cfg.storage}) as tracker:
        tuned: dict = {"storage": cfg.storage, "global": {}, "per_noise": {}, "classical": {}}
        levels = sorted({s.noise_level for s in samples})
        # blind: start from the rules at the middle of the range of levels
        jobs = [("global", subset(samples, cfg.max_samples, seed, "global"), cfg.trials_global,
                 rule_schedules(float(np.median(levels)), cfg))]
        for level in levels:
            group = [s for s in samples if s.noise_level == level]
            jobs.append((f"noise-{level_key(level)}", subset(group, cfg.max_samples, seed, level), cfg.trials_per_noise,
                         rule_schedules(level, cfg)))
        for name, group, budget, initial in jobs:
            study = run_study(f"{prefix}-{name}", cfg.storage, derive_seed(seed, name) % 2**31, budget,
                              schedule_objective(group, denoiser, device, cfg), initial)
            best = {**study.best_params, "val_psnr": round(study.best_value, 4), "trials": budget, "study": study.study_name}
            if name == "global":
                tuned["global"] = best
            else:
                tuned["per_noise"][name.split("-", 1)[1]] = best
            tracker.log_metrics({f"{name}/best_val_psnr": study.best_value})
            log.info("%s: best %.2f dB with %s", name, study.best_value, study.best_params)
        classical_samples = subset(samples, cfg.max_samples, seed, "classical")
        for method in CLASSICAL:
            study = run_study(f"{prefix}-{method}", cfg.storage, derive_seed(seed, method) % 2**31, cfg.trials_classical,
                              classical_objective(method, classical_samples))
            tuned["classical"][method] = {**study.best_params, "val_psnr": round(study.best_value, 4), "study": study.study_name}
            tracker.log_metrics({f"{method}/best_val_psnr": study.best_value})
        io.write_text(args.out, "# Written by the tune stage (Optuna on the validation split); read by evaluate.\n"
                      + yaml.safe_dump(tuned, sort_keys=False))
        tracker.log_artifact(args.out)
        log.info("tuned schedules written to %s", args.out)


if __name__ == "__main__":
    run_main(main)
