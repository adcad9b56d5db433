"""DVC stage ``tune``: tune the hand-set baselines with Optuna on the validation split.

    python -m stages.tune --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --models models/deblur --out tuned/deblur.yaml

Searches (TPE, seeded, persistent studies that resume; ``stages/optuna_adapter.py``) in the space
of ``pipeline.baselines.tuning``: one blind HQS schedule ``(lam, s_start, s_end, K)`` for all
noise levels (``optuna_global``), one per noise level (``optuna_per_noise``, non-blind), each
started from the IRCNN and DPIR rules, and the knob of each classical method (Wiener balance,
Richardson-Lucy iterations, TV weight). The pre-trained denoiser is the prior, as for every
plug-and-play baseline. Writes the winners to ``tuned.yaml``, which ``evaluate`` and the
benchmark command read, so ``dvc repro`` reproduces them. Rain and haze (``base.task``) have
nothing to tune: the stage logs so and writes a ``tuned.yaml`` saying it was skipped.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import io
from pipeline.baselines.tuning import CLASSICAL, classical_objective, schedule_objective, schedule_searches, \
    schedule_space, study_key, subset
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
    p.add_argument("--models", default=None, help="default models/<task>")
    p.add_argument("--out", default=None, help="default tuned/<task>.yaml")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    fill_paths(args, params.base.task, prepared="prepared", degraded="degraded", models="models", out="tuned")
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

    with stage_run("tune", params, {"device": str(device), "optuna_storage": cfg.storage}) as tracker:
        tuned: dict = {"storage": cfg.storage, "global": {}, "per_noise": {}, "classical": {}}
        space = schedule_space(cfg.max_iterations)
        for job in schedule_searches(samples, cfg.max_samples, cfg.max_iterations, seed):
            budget = cfg.trials_global if job.name == "global" else cfg.trials_per_noise
            found = search(f"{prefix}-{job.name}", space, schedule_objective(job.samples, denoiser, device), budget,
                           derive_seed(seed, job.name) % 2**31, cfg.storage, job.initial)
            best = {**found.best_params, "val_psnr": round(found.best_value, 4), "trials": budget, "study": found.study}
            if job.name == "global":
                tuned["global"] = best
            else:
                tuned["per_noise"][job.name.split("-", 1)[1]] = best
            tracker.log_metrics({f"{job.name}/best_val_psnr": found.best_value})
            log.info("%s: best %.2f dB with %s", job.name, found.best_value, found.best_params)
        classical_samples = subset(samples, cfg.max_samples, seed, "classical")
        for method, (_, knob) in CLASSICAL.items():
            found = search(f"{prefix}-{method}", (knob,), classical_objective(method, classical_samples),
                           cfg.trials_classical, derive_seed(seed, method) % 2**31, cfg.storage)
            tuned["classical"][method] = {**found.best_params, "val_psnr": round(found.best_value, 4), "study": found.study}
            tracker.log_metrics({f"{method}/best_val_psnr": found.best_value})
        io.write_text(args.out, "# Written by the tune stage (Optuna on the validation split); read by evaluate.\n"
                      + yaml.safe_dump(tuned, sort_keys=False))
        tracker.log_artifact(args.out)
        log.info("tuned schedules written to %s", args.out)


if __name__ == "__main__":
    run_main(main)
