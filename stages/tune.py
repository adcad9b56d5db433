"""DVC stage ``tune``: tune the hand-set baselines with Optuna on the validation split.

    python -m stages.tune --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --seed 0 --models models/deblur/seed-0 --out tuned/deblur/seed-0.yaml

Searches (TPE, seeded, persistent studies that resume; ``stages/optuna_adapter.py``) in the space
of ``pipeline.baselines.tuning``: one blind HQS schedule ``(lam, s_start, s_end, K)`` for all
noise levels (``optuna_global``), one per noise level (``optuna_per_noise``, non-blind), each
started from the IRCNN and DPIR rules, and the knob of each classical method (Wiener balance,
Richardson-Lucy iterations, TV weight).

Budget: the same compute as the learned method, in process CPU-seconds (every thread): by
default the ``cpu_seconds`` its training recorded in ``<models>/train.json``
(``tune.budget_cpu_seconds`` overrides it), split 1/3 to the global schedule, 1/2 over the
per-level schedules, 1/6 over the classical knobs (``pipeline.baselines.tuning.BUDGET_SHARES``);
each search stops once its share is spent (checked between trials), ``tune.max_trials`` caps it.
A tuned schedule is kept only if it beats the best rule it started from on the same validation
samples; otherwise that rule is written (``kept: rule``, ``source: ircnn|dpir``). The pre-trained denoiser is the prior, as for every
plug-and-play baseline. Writes the winners to ``tuned.yaml``, which ``evaluate`` and the
benchmark command read, so ``dvc repro`` reproduces them. Rain and haze (``base.task``) have
nothing to tune: the stage logs so and writes a ``tuned.yaml`` saying it was skipped.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from pipeline import io
from pipeline.baselines.tuning import CLASSICAL, budget_split, classical_objective, keep_or_rule, schedule_objective, \
    schedule_searches, schedule_space, study_key, subset
from pipeline.checkpoint import load_model
from pipeline.datasets import read_split
from pipeline.device import pick_device, set_threads
from pipeline.generators.seeds import derive_seed
from stages.common import fill_paths, log, load_params, parser, run_main
from stages.optuna_adapter import search
from stages.tracking import stage_run


def write_skipped(params, out: str) -> None:
    """Rain and haze: no schedule to search, but the DVC output still exists."""
    with stage_run("tune", params, {"skipped": "true"}) as tracker:
        log.info("task %s: nothing to tune (the hand-set schedules are deblurring baselines); tune skipped",
                 params.base.task)
        io.write_text(out, f"# Written by the tune stage: task {params.base.task} has nothing to tune.\n"
                      + yaml.safe_dump({"task": params.base.task, "skipped": True}, sort_keys=False))
        tracker.log_artifact(out)


def main() -> None:
    p = parser(__doc__, data=True)
    p.add_argument("--models", default=None, help="default models/<task>/seed-<S>")
    p.add_argument("--train-json", default=None,
                   help="the learned model's train.json, whose cpu_seconds is the tuning budget (default <models>/train.json)")
    p.add_argument("--out", default=None, help="default tuned/<task>/seed-<S>.yaml")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed: its model's denoiser (models/<task>/seed-<S>) and the search seed (default base.seed)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    if args.seed is not None:
        params = dataclasses.replace(params, base=dataclasses.replace(params.base, seed=args.seed))
    fill_paths(args, params.base.task, params.base.seed, prepared="prepared", degraded="degraded", models="models",
               out="tuned")
    cfg, seed = params.tune, params.base.seed
    if params.base.task != "deblur":
        write_skipped(params, args.out)
        return
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    model_path = Path(args.models) / "model.pt"
    _, denoiser, _ = load_model(model_path, task=params.base.task, device=device)
    samples = read_split(args.prepared, args.degraded, "val")
    key = study_key(io.sha256_file(model_path), io.sha256_file(Path(args.degraded) / "samples.csv"),
                    {"max_iterations": cfg.max_iterations, "max_samples": cfg.max_samples, "seed": seed})
    prefix = f"{params.base.task}-{key}"
    log.info("study key %s (denoiser, validation data, tune settings, objective code)", key)

    budget, source = tuning_budget(cfg.budget_cpu_seconds, Path(args.train_json or Path(args.models) / "train.json"))
    jobs = schedule_searches(samples, cfg.max_samples, cfg.max_iterations, seed)
    shares = budget_split(budget, [j.name.split("-", 1)[1] for j in jobs if j.name != "global"], list(CLASSICAL))
    log.info("tuning budget %.1f CPU-seconds (%s), split %s", budget, source,
             {k: round(v, 1) for k, v in shares.items()})

    with stage_run("tune", params, {"device": str(device), "optuna_storage": cfg.storage}) as tracker:
        tuned: dict = {"storage": cfg.storage, "budget": {"cpu_seconds": round(budget, 2), "source": source},
                       "global": {}, "per_noise": {}, "classical": {}}
        space = schedule_space(cfg.max_iterations)
        for job in jobs:
            found = search(f"{prefix}-{job.name}", space, schedule_objective(job.samples, denoiser, device),
                           cfg.max_trials, derive_seed(seed, job.name) % 2**31, cfg.storage, job.initial,
                           cpu_seconds=shares[job.name])
            best = {**keep_or_rule(found.best_params, found.best_value, job.initial, found.initial_values),
                    "trials": found.trials, "cpu_seconds": round(found.cpu_seconds, 2), "study": found.study}
            if job.name == "global":
                tuned["global"] = best
            else:
                tuned["per_noise"][job.name.split("-", 1)[1]] = best
            tracker.log_metrics({f"{job.name}/best_val_psnr": found.best_value, f"{job.name}/trials": found.trials})
            log.info("%s: %d trials in %.1f CPU-s, best %.2f dB; kept the %s", job.name, found.trials,
                     found.cpu_seconds, found.best_value,
                     "tuned schedule" if best["kept"] == "tuned" else f"{best['source']} rule (the search did not beat it)")
        classical_samples = subset(samples, cfg.max_samples, seed, "classical")
        for method, (_, knob) in CLASSICAL.items():
            found = search(f"{prefix}-{method}", (knob,), classical_objective(method, classical_samples),
                           cfg.max_trials, derive_seed(seed, method) % 2**31, cfg.storage, cpu_seconds=shares[method])
            tuned["classical"][method] = {**found.best_params, "val_psnr": round(found.best_value, 4),
                                          "trials": found.trials, "cpu_seconds": round(found.cpu_seconds, 2),
                                          "study": found.study}
            tracker.log_metrics({f"{method}/best_val_psnr": found.best_value})
        spent = sum(e["cpu_seconds"] for e in [tuned["global"], *tuned["per_noise"].values(), *tuned["classical"].values()])
        tuned["budget"]["spent_cpu_seconds"] = round(spent, 2)
        tracker.log_metrics({"budget_cpu_seconds": budget, "spent_cpu_seconds": spent})
        io.write_text(args.out, "# Written by the tune stage (Optuna on the validation split); read by evaluate.\n"
                      + yaml.safe_dump(tuned, sort_keys=False))
        tracker.log_artifact(args.out)
        log.info("tuned schedules written to %s (%.1f of %.1f CPU-seconds spent)", args.out, spent, budget)


def tuning_budget(configured: float, train_json: Path) -> tuple[float, str]:
    """The CPU-seconds the searches may spend and where the figure comes from: ``tune.budget_cpu_seconds``
    when set, else the ``cpu_seconds`` the learned model's training recorded in ``train_json``
    (the equal budget)."""
    if configured > 0:
        return configured, "tune.budget_cpu_seconds"
    if not train_json.is_file():
        raise io.InputError(f"{train_json}: missing; the tuning budget (tune.budget_cpu_seconds: 0) is the learned "
                            "model's training CPU-seconds: train it first, or set tune.budget_cpu_seconds")
    record = io.read_json(train_json)
    seconds = record.get("cpu_seconds") if isinstance(record, dict) else None
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        raise io.InputError(f"{train_json}: no positive cpu_seconds (written by the train stage); retrain, or set "
                            "tune.budget_cpu_seconds")
    return float(seconds), f"cpu_seconds of {train_json} (the learned model's training)"


if __name__ == "__main__":
    run_main(main)
