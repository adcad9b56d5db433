"""One trial of a sweep, as a Ray worker runs it, and the files it leaves in its folder.

A trial trains its params as the ``train`` stage does (:func:`pipeline.bilevel.setup.train`; under Ray
Train's ``TorchTrainer`` when ``train.num_workers > 1``), scores the model on the validation
split, logs its MLflow child run and writes ``TRIAL/result.json``. Its folder also holds
``checkpoint.pt`` (a re-run resumes from it), ``attempts`` (the runs of this launch),
``failed.json`` (the last failure) and ``fault_injected`` (testing: ``--inject-fault`` fired).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pipeline import datasets, io
from pipeline.bilevel.setup import train
from pipeline.config import flatten, params_from_dict, pin_task, to_dict
from pipeline.sweep import Resources, Trial, evaluate_validation
from stages import ray_adapter
from stages.tracking import SweepRun, log_trial_run

LAUNCH_MARKERS = ("attempts", "failed.json", "fault_injected")  # counts and markers of one launch


def read_finished(trial_dir: Path, key: str) -> dict | None:
    """The trial's result if it finished under the same key (params and data), else ``None``."""
    path = trial_dir / "result.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("key") == key and result.get("status") == "finished" else None


def attempts(trial_dir: Path) -> int:
    """How often the trial started in this launch (a worker that died counts)."""
    path = trial_dir / "attempts"
    return int(path.read_text()) if path.exists() else 0


def trial_task(t: Trial, trial_dir: Path, prepared: Path, degraded: Path, resources: Resources,
               tracking: SweepRun | None, fault_step: int | None = None) -> dict:
    """What :func:`run_trial` takes to run trial ``t`` in ``trial_dir``."""
    return {"trial_id": t.trial_id, "params": to_dict(t.params), "dir": str(trial_dir.resolve()),
            "prepared": str(prepared.resolve()), "degraded": str(degraded.resolve()), "key": t.key,
            "values": [list(v) for v in t.values], "seed": t.seed, "num_cpus": resources.num_cpus,
            "num_gpus": resources.num_gpus, "tracking": tracking, "fault_step": fault_step}


def _data_parallel_loop(config: dict) -> None:
    """One Ray Train worker: the same training as one process, on its share of every batch."""
    torch.set_num_threads(max(1, int(config["threads"])))
    params = params_from_dict(pin_task(config["params"]))
    trainer, model, _, seconds = train(params, Path(config["prepared"]), Path(config["degraded"]),
                                       Path(config["checkpoint"]), ray_adapter.worker_device(), None)
    if ray_adapter.worker_rank() == 0:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "history": trainer.history,
                    "seconds": seconds, "resumed_from": trainer.resumed_from}, config["out"])


def train_data_parallel(params, prepared: Path, degraded: Path, checkpoint: Path, out: Path, num_cpus: float,
                        num_gpus: float) -> dict:
    """Train ``params`` with ``params.train.num_workers`` Ray Train workers (each asks
    ``num_cpus``/``num_gpus``); returns rank 0's ``{"model": state_dict, "history", "seconds",
    "resumed_from"}`` (also in ``out``)."""
    config = {"params": to_dict(params), "prepared": str(prepared), "degraded": str(degraded),
              "checkpoint": str(checkpoint), "out": str(out), "threads": max(1, int(num_cpus))}
    ray_adapter.fit_data_parallel(_data_parallel_loop, config, params.train.num_workers, num_cpus, num_gpus,
                                  out.parent / "ray_train")
    return torch.load(out, weights_only=True)


def run_trial(task: dict) -> dict:
    """Train and validate one trial, log its child run, write ``result.json``; runs in a Ray worker.

    ``task``: ``trial_id``, ``params`` (a params mapping), ``dir``, ``prepared``, ``degraded``,
    ``key``, ``values``, ``seed``, ``num_cpus``, ``num_gpus``, ``tracking`` (a
    :class:`~stages.tracking.SweepRun` or ``None``), ``fault_step`` (testing: the worker dies
    once at that bilevel step).
    """
    from pipeline.device import pick_device, tune_for_fixed_shapes
    from pipeline.models.factory import build_model
    trial_dir = Path(task["dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    attempt = attempts(trial_dir) + 1
    (trial_dir / "attempts").write_text(str(attempt))
    torch.set_num_threads(max(1, int(task["num_cpus"])))  # one thread per requested core: trials don't fight
    params = params_from_dict(pin_task(task["params"]))
    prepared, degraded = Path(task["prepared"]), Path(task["degraded"])
    fault = task.get("fault_step")

    def log_fn(row: dict) -> None:
        marker = trial_dir / "fault_injected"
        if fault is not None and row["phase"] == "bilevel" and row["step"] >= fault and not marker.exists():
            marker.write_text(str(row["step"]))
            os._exit(1)  # the worker process dies, as on a lost node or an OOM kill

    device = pick_device(params.base.device)
    tune_for_fixed_shapes(device)
    if params.train.num_workers > 1:
        state = train_data_parallel(params, prepared, degraded, trial_dir / "checkpoint.pt", trial_dir / "dp_model.pt",
                                    task["num_cpus"], task["num_gpus"])
        model = build_model(params.model, datasets.channels(prepared), task=params.base.task)
        model.load_state_dict(state["model"])
        history, seconds, resumed = state["history"], state["seconds"], state["resumed_from"]
    else:
        trainer, model, _, seconds = train(params, prepared, degraded, trial_dir / "checkpoint.pt", device, log_fn)
        history, resumed = trainer.history, trainer.resumed_from
    metrics, stages = evaluate_validation(model, datasets.read_split(prepared, degraded, "val"), device)
    result = {"trial_id": task["trial_id"], "key": task["key"], "status": "finished", "values": task["values"],
              "seed": task["seed"], "metrics": metrics, "stages": stages, "seconds": seconds, "attempts": attempt,
              "resumed_from": resumed, "history": history}
    tracking: SweepRun | None = task.get("tracking")
    if tracking:
        result["run_id"] = log_trial_run(
            tracking, task["trial_id"], {**flatten(task["params"]), **{f"axis.{a}": v for a, v in task["values"]}},
            history, {**metrics, "train_seconds": seconds}, "FINISHED",
            {"attempts": str(attempt), "resumed_from": str(resumed)}, params.train.pretrain_steps)
    io.write_json(trial_dir / "result.json", result)
    return result
