"""Stage / command ``sweep``: an ablation sweep (``sweeps/*.yaml``) run on Ray, tracked in MLflow.

    python -m stages.sweep --sweep sweeps/tiny.yaml --params params.yaml \
        --prepared data/deblur/prepared --degraded data/deblur/degraded --out sweeps/results/tiny

Ray: a local one with this machine's cores by default (``--num-cpus`` to change), the cluster
at ``RAY_ADDRESS`` when it is set (``ray start --head`` on one node, ``ray start
--address=HEAD:6379`` on the others; the project and the data at the same path on every node).
Each trial is a Ray task asking for the sweep file's ``resources`` (``num_cpus``, fractional
``num_gpus``) and trains with the same function as the ``train`` stage (``stages.train.train``);
with ``train.num_workers > 1`` under Ray Train's ``TorchTrainer`` (gloo on CPU, NCCL on GPU).

Faults: a trial whose worker dies is re-run by Ray up to ``max_retries`` times and resumes from
its last checkpoint (``OUT/trials/ID/checkpoint.pt``); a finished trial leaves
``OUT/trials/ID/result.json``, so a re-launched sweep reads it back instead of re-running it
(unless the trial's params or the data changed). Failures are listed in the summary, the table
and MLflow (a FAILED child run), and the command exits 1.

Tracking: one MLflow parent run per sweep (re-opened on a re-launch), a child run per trial with
its params, curves and final metrics, logged by the trial itself to the same tracking URI (make
it a server, ``http://...``, on a cluster). Writes ``OUT/results.csv``, ``results.md``,
``ranking.csv``, ``summary.md``, ``summary.json`` and ``figures/*.png``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import io
from pipeline.config import ConfigError, flatten, merge, params_from_dict, pin_task
from pipeline.sweep import (METRIC, SweepSpec, Trial, expand, markdown_table, parse_sweep, psnr_by_noise_figure,
                            rank, ranking_text, results_frame, stages_figure, time_figure)
from stages.common import TaskPaths, log, load_params, parser, read_yaml, run_main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_PREFIX = "hyperguide"


# -- inside a trial (a Ray worker) -----------------------------------------------------------
def evaluate_validation(model, params, prepared: Path, degraded: Path, device: torch.device) -> tuple[dict, list[dict]]:
    """The trained model on every validation sample: ``({"val_psnr": mean of per-level means,
    "val_psnr@LEVEL": .., "val_ssim": ..}, per-stage rows)``."""
    from pipeline.data import hwc_to_chw
    from pipeline.evaluation import restore, score

    rows, stage_rows = [], []
    model.to(device).eval()
    samples = [r for r in io.read_csv(degraded / "samples.csv") if r["split"] == "val"]
    if not samples:
        raise io.InputError(f"{degraded / 'samples.csv'}: no validation samples (prepare.split.val)")
    for r in samples:
        s = io.load_npz(degraded / "samples" / f"{r['sample_id']}.npz")
        x = hwc_to_chw(io.read_image(prepared / "images" / f"{r['image']}.png", gray=s["y"].shape[0] == 1))
        res = restore(s["y"], s["kernel"], s["sigma"], model, None, device, 0.01, methods=("learned",))
        sc = score(res.outputs, x, s["kernel"].shape)["learned"]
        rows.append({"noise_level": float(r["noise_level"]), **sc})
        for k, g in enumerate(res.guidance):
            stage_rows.append({"stage": k + 1, "rho": float(res.rhos[k]), "guidance_mean_255": float(g.mean()) * 255,
                               "guidance_gain": float(torch.exp(model.guidance_gain[k]).item())})
    frame = pd.DataFrame(rows)
    per_level = frame.groupby("noise_level")[["psnr", "ssim"]].mean()
    metrics = {METRIC: float(per_level["psnr"].mean()), "val_ssim": float(per_level["ssim"].mean())}
    metrics.update({f"{METRIC}@{lvl:g}": float(v) for lvl, v in per_level["psnr"].items()})
    stages = pd.DataFrame(stage_rows).groupby("stage").mean().reset_index().to_dict("records")
    return metrics, stages


def _with_retries(fn, what: str, tries: int = 5):
    """SQLite-backed MLflow stores refuse concurrent writers for a moment: retry with backoff."""
    for i in range(tries):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the store's error types vary by backend
            if i == tries - 1 or "locked" not in str(exc).lower():
                raise
            log.warning("%s: %s; retrying", what, exc)
            time.sleep(0.5 * 2**i)


def log_child_run(tracking: dict, trial_id: str, params_flat: dict, history: list[dict], metrics: dict,
                  status: str, tags: dict) -> str:
    """A child run of the sweep's parent: params, curves (per step), final metrics. Through
    ``MlflowClient`` (no process-wide active run: a Ray worker runs many trials)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking["uri"])
    run_tags = {"mlflow.parentRunId": tracking["parent_run_id"], "sweep": tracking["sweep"], "trial_id": trial_id,
                "dvc_stage": "sweep", **tags}
    run = _with_retries(lambda: client.create_run(tracking["experiment_id"], run_name=trial_id, tags=run_tags),
                        "create_run")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    series = []
    for row in history:
        offset = 0 if row["phase"] == "pretrain" else tracking.get("pretrain_steps", 0)
        for k, v in row.items():
            if k not in ("phase", "step") and isinstance(v, (int, float)) and np.isfinite(v):
                series.append(Metric(f"{row['phase']}/{k}", float(v), now, offset + int(row["step"])))
    finals = [Metric(k.replace("@", "/noise_"), float(v), now, 0) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)]
    params = [Param(k, str(v)[:6000]) for k, v in params_flat.items()]
    for i in range(0, max(len(params), 1), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        chunk = params[i:i + 100]
        if chunk:
            _with_retries(lambda: client.log_batch(run_id, params=chunk), "log_batch")
    allm = series + finals
    for i in range(0, len(allm), 1000):
        chunk = allm[i:i + 1000]
        _with_retries(lambda: client.log_batch(run_id, metrics=chunk, tags=[RunTag("status", status)]), "log_batch")
    _with_retries(lambda: client.set_terminated(run_id, status), "set_terminated")
    return run_id


def _data_parallel_loop(config: dict) -> None:
    """One Ray Train worker: the same training as one process, on its share of every batch."""
    import ray.train
    from stages.train import train

    torch.set_num_threads(max(1, int(config["threads"])))
    params = params_from_dict(pin_task(config["params"]))
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    trainer, model, _, seconds = train(params, Path(config["prepared"]), Path(config["degraded"]),
                                       Path(config["checkpoint"]), device, config.get("log_fn"))
    if ray.train.get_context().get_world_rank() == 0:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "history": trainer.history,
                    "seconds": seconds, "resumed_from": trainer.resumed_from}, config["out"])


def train_data_parallel(params, prepared: Path, degraded: Path, checkpoint: Path, out: Path, num_cpus: float,
                        num_gpus: float) -> dict:
    """Train ``params`` under ``TorchTrainer`` with ``params.train.num_workers`` workers (each asks
    ``num_cpus``/``num_gpus``); returns rank 0's ``{"model": state_dict, "history", "seconds",
    "resumed_from"}``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.config import to_dict

    use_gpu = num_gpus > 0
    resources = {"CPU": num_cpus, **({"GPU": num_gpus} if use_gpu else {})}
    trainer = TorchTrainer(
        _data_parallel_loop,
        train_loop_config={"params": to_dict(params), "prepared": str(prepared), "degraded": str(degraded),
                           "checkpoint": str(checkpoint), "out": str(out), "threads": max(1, int(num_cpus))},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=params.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(out.parent.resolve() / "ray_train"), name="train"),
    )
    trainer.fit()
    return torch.load(out, weights_only=True)


def run_trial(task: dict) -> dict:
    """Train and validate one trial, log its child run, write ``result.json``; runs in a Ray worker.

    ``task``: ``trial_id``, ``params`` (a params mapping), ``dir``, ``prepared``, ``degraded``,
    ``key``, ``values``, ``seed``, ``num_cpus``, ``num_gpus``, ``tracking`` (or ``None``),
    ``fault_step`` (testing: the worker dies once at that bilevel step).
    """
    from pipeline.device import pick_device
    from stages.train import train

    trial_dir = Path(task["dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    attempts_file = trial_dir / "attempts"
    attempts = (int(attempts_file.read_text()) if attempts_file.exists() else 0) + 1
    attempts_file.write_text(str(attempts))
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
    if params.train.num_workers > 1:
        from pipeline.models.factory import build_model

        state = train_data_parallel(params, prepared, degraded, trial_dir / "checkpoint.pt", trial_dir / "dp_model.pt",
                                    task["num_cpus"], task["num_gpus"])
        channels = int(io.read_csv(prepared / "manifest.csv")[0]["channels"])
        model = build_model(params.model, channels, task=params.base.task)
        model.load_state_dict(state["model"])
        history, seconds, resumed = state["history"], state["seconds"], state["resumed_from"]
    else:
        trainer, model, _, seconds = train(params, prepared, degraded, trial_dir / "checkpoint.pt", device, log_fn)
        history, resumed = trainer.history, trainer.resumed_from
    metrics, stages = evaluate_validation(model, params, prepared, degraded, device)
    result = {"trial_id": task["trial_id"], "key": task["key"], "status": "finished", "values": task["values"],
              "seed": task["seed"], "metrics": metrics, "stages": stages, "seconds": seconds, "attempts": attempts,
              "resumed_from": resumed, "history": history}
    if task.get("tracking"):
        tags = {"attempts": str(attempts), "resumed_from": str(resumed)}
        result["run_id"] = log_child_run({**task["tracking"], "pretrain_steps": params.train.pretrain_steps},
                                         task["trial_id"], {**flatten(task["params"]), **{f"axis.{a}": v for a, v in task["values"]}},
                                         history, {**metrics, "train_seconds": seconds}, "FINISHED", tags)
    io.write_json(trial_dir / "result.json", result)
    return result


# -- the driver ------------------------------------------------------------------------------
def data_fingerprint(prepared: Path, degraded: Path) -> str:
    """What the trials read: a finished trial with another fingerprint is re-run."""
    return hashlib.sha256("".join(io.sha256_file(p) for p in (prepared / "manifest.csv", degraded / "samples.csv"))
                          .encode()).hexdigest()[:16]


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


def connect_ray(num_cpus: int | None, object_store_mb: int, env: dict[str, str]) -> tuple[Any, float]:
    """``(ray, seconds to start or connect)``: the cluster at ``RAY_ADDRESS``, else a local Ray."""
    import ray

    t0 = time.perf_counter()
    runtime_env = {"env_vars": env}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, log_to_driver=True)
    else:
        kw = {"object_store_memory": object_store_mb * 2**20} if object_store_mb else {}
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=runtime_env, **kw)
    return ray, time.perf_counter() - t0


def open_parent_run(out: Path, spec: SweepSpec, task: str, n_trials: int) -> dict:
    """The sweep's MLflow parent run (re-opened when ``OUT/sweep_run.json`` names one that still
    exists): ``{"uri", "experiment_id", "parent_run_id", "sweep"}``."""
    import logging

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from stages.tracking import _experiment_id, git_commit, tracking_uri

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())  # workers may run elsewhere
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(mlflow, f"{EXPERIMENT_PREFIX}-{task}")
    client = MlflowClient(uri)
    state_path = out / "sweep_run.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        try:
            run = client.get_run(state["parent_run_id"])
            if run.info.experiment_id == experiment_id and state.get("sweep") == spec.name:
                client.update_run(run.info.run_id, status="RUNNING")
                return {"uri": uri, "experiment_id": experiment_id, "parent_run_id": run.info.run_id, "sweep": spec.name}
        except Exception:  # noqa: BLE001 - another store, a deleted run: start a new parent
            pass
    run = client.create_run(experiment_id, run_name=f"sweep:{spec.name}",
                            tags={"dvc_stage": "sweep", "git_commit": git_commit(), "task": task, "sweep": spec.name})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in {
        "sweep.name": spec.name, "sweep.axes": json.dumps({a.name: list(a.values) for a in spec.axes}),
        "sweep.seeds": json.dumps(list(spec.seeds)), "sweep.num_cpus": spec.resources.num_cpus,
        "sweep.num_gpus": spec.resources.num_gpus, "sweep.max_retries": spec.max_retries, "sweep.n_trials": n_trials,
    }.items()])
    io.write_json(state_path, {"parent_run_id": run.info.run_id, "sweep": spec.name})
    return {"uri": uri, "experiment_id": experiment_id, "parent_run_id": run.info.run_id, "sweep": spec.name}


def run_pending(pending: list[Trial], spec: SweepSpec, out: Path, prepared: Path, degraded: Path,
                tracking: dict | None, num_cpus: int | None, object_store_mb: int,
                fault: tuple[str, int] | None) -> tuple[list[dict], float]:
    """Run ``pending`` trials on Ray; ``(records, Ray start-up seconds)``. A trial that still fails
    after ``max_retries`` re-runs of its worker becomes a ``failed`` record."""
    from pipeline.config import to_dict

    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    ray, startup = connect_ray(num_cpus, object_store_mb, env)
    log.info("Ray ready in %.1f s: %s", startup, ray.cluster_resources())
    refs = {}
    for i, t in enumerate(pending):
        trial_dir = out / "trials" / t.trial_id
        for stale in ("attempts", "failed.json", "fault_injected"):  # counts and markers are per launch
            (trial_dir / stale).unlink(missing_ok=True)
        dp = t.params.train.num_workers > 1
        task = {"trial_id": t.trial_id, "params": to_dict(t.params), "dir": str((out / "trials" / t.trial_id).resolve()),
                "prepared": str(prepared.resolve()), "degraded": str(degraded.resolve()), "key": t.key,
                "values": [list(v) for v in t.values], "seed": t.seed, "num_cpus": spec.resources.num_cpus,
                "num_gpus": spec.resources.num_gpus, "tracking": tracking,
                "fault_step": fault[1] if fault and fault[0] in (t.trial_id, str(i)) else None}
        # a data-parallel trial only coordinates: its TorchTrainer workers ask for the resources
        options = {"num_cpus": 0 if dp else spec.resources.num_cpus, "num_gpus": 0 if dp else spec.resources.num_gpus,
                   "max_retries": spec.max_retries, "retry_exceptions": False}
        refs[ray.remote(run_trial).options(**options).remote(task)] = (t, task)
    records = []
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            t, task = refs.pop(ref)
            try:
                records.append(ray.get(ref))
                log.info("trial %s finished", t.trial_id)
            except Exception as exc:  # noqa: BLE001 - a dead worker past its retries, or an error in the trial
                records.append(failed_record(t, task, exc))
                log.error("trial %s failed: %s", t.trial_id, records[-1]["error"])
    ray.shutdown()
    return records, startup


def failed_record(t: Trial, task: dict, exc: BaseException) -> dict:
    trial_dir = Path(task["dir"])
    attempts = int((trial_dir / "attempts").read_text()) if (trial_dir / "attempts").exists() else 0
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]
    record = {"trial_id": t.trial_id, "key": t.key, "status": "failed", "values": task["values"], "seed": t.seed,
              "metrics": {}, "stages": [], "attempts": attempts, "error": error}
    io.write_json(trial_dir / "failed.json", record)  # for the record; a re-launch runs the trial again
    if task.get("tracking"):
        try:
            record["run_id"] = log_child_run(task["tracking"], t.trial_id, flatten(task["params"]), [], {}, "FAILED",
                                             {"error": error[:250], "attempts": str(attempts)})
        except Exception as log_exc:  # noqa: BLE001 - the failure itself is what matters here
            log.warning("could not log the failed trial %s to MLflow: %s", t.trial_id, log_exc)
    return record


def write_outputs(records: list[dict], spec: SweepSpec, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Table (CSV, Markdown), ranking, summary and figures from every trial's record."""
    import matplotlib.pyplot as plt

    frame = results_frame(records, spec)
    ranking = rank(frame, spec)
    text = ranking_text(ranking, spec)
    failed = frame[frame["status"] != "finished"] if len(frame) else frame
    io.write_text(out / "results.csv", frame.to_csv(index=False))
    io.write_text(out / "results.md", markdown_table(frame.drop(columns=["error"]) if "error" in frame else frame))
    io.write_text(out / "ranking.csv", ranking.to_csv(index=False))
    failures = "".join(f"- {r.trial_id}: {r.error} (attempts: {r.attempts})\n" for r in failed.itertuples())
    io.write_text(out / "summary.md", f"# Sweep `{spec.name}`\n\n{len(frame)} trials, {len(failed)} failed.\n\n"
                  f"## Ranking\n\n{text}\n\n{markdown_table(ranking)}\n"
                  + (f"## Failures\n\n{failures}" if failures else ""))
    io.write_json(out / "summary.json", {"sweep": spec.name, "n_trials": len(frame), "n_failed": len(failed),
                                         "failed": failed["trial_id"].tolist() if len(failed) else [],
                                         "ranking": json.loads(ranking.to_json(orient="records"))})
    figures = out / "figures"
    stage_rows = pd.DataFrame([{"config": ", ".join(str(v) for _, v in r["values"]), **s}
                               for r in records if r["status"] == "finished" for s in r.get("stages", [])])
    for name, fig in (("psnr_by_noise.png", psnr_by_noise_figure(frame, spec)), ("train_time.png", time_figure(frame, spec)),
                      ("stages.png", stages_figure(stage_rows))):
        with io.atomic_path(figures / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return frame, ranking, text


def load_spec(sweep_path: Path, base: dict) -> SweepSpec:
    data = read_yaml(sweep_path, "sweep file")
    try:
        return parse_sweep(data, base)
    except ConfigError as exc:
        raise type(exc)(f"{sweep_path}: {exc}") from exc


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sweep", default="sweeps/tiny.yaml", help="the sweep file (axes, seeds, resources)")
    p.add_argument("--prepared", default=str(TaskPaths("deblur").prepared))  # sweeps run deblurring only
    p.add_argument("--degraded", default=str(TaskPaths("deblur").degraded))
    p.add_argument("--out", default=None, help="output folder (default: sweeps/results/<name>)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: cores to use (default: all)")
    p.add_argument("--object-store-mb", type=int, default=0, help="local Ray only: object store size (0: Ray's default)")
    p.add_argument("--no-tracking", action="store_true", help="no MLflow runs")
    p.add_argument("--inject-fault", default=None, metavar="TRIAL@STEP",
                   help="testing: the worker of TRIAL (an id or an index among the trials to run) dies once at that bilevel step")
    args = p.parse_args()
    load_params(args.params)  # the params file alone must be valid (clear errors first)
    base = read_yaml(Path(args.params), "params file") or {}
    spec = load_spec(Path(args.sweep), base)
    task = params_from_dict(pin_task(merge(base, spec.overrides))).base.task
    if task != "deblur":  # the trials are scored per noise level on blurred validation samples
        raise ConfigError(f"base.task {task}: ablation sweeps run for deblur only (not yet for rain and haze)")
    prepared, degraded = Path(args.prepared), Path(args.degraded)
    for path in (prepared / "manifest.csv", degraded / "samples.csv"):
        if not path.exists():
            raise io.InputError(f"{path}: missing (run `dvc repro degrade` first)")
    trials = expand(spec, base, data_fingerprint(prepared, degraded))
    out = Path(args.out or f"sweeps/results/{spec.name}")
    fault = None
    if args.inject_fault:
        trial, _, step = args.inject_fault.partition("@")
        if not step.isdigit():
            raise ConfigError(f"--inject-fault: expected TRIAL@STEP, got {args.inject_fault!r}")
        fault = (trial, int(step))

    done = {t.trial_id: r for t in trials if (r := read_finished(out / "trials" / t.trial_id, t.key))}
    pending = [t for t in trials if t.trial_id not in done]
    log.info("sweep %s: %d trials, %d already finished (read back), %d to run", spec.name, len(trials), len(done),
             len(pending))
    tracking = None if args.no_tracking else open_parent_run(out, spec, task, len(trials))
    t0 = time.perf_counter()
    records, startup = run_pending(pending, spec, out, prepared, degraded, tracking, args.num_cpus, args.object_store_mb,
                                   fault) if pending else ([], 0.0)
    wall = time.perf_counter() - t0
    by_id = {**done, **{r["trial_id"]: r for r in records}}
    ordered = [by_id[t.trial_id] for t in trials]
    frame, ranking, text = write_outputs(ordered, spec, out)
    n_failed = int((frame["status"] != "finished").sum())
    io.write_json(out / "run.json", {"wall_seconds": round(wall, 2), "ray_startup_seconds": round(startup, 2),
                                     "n_run": len(pending), "n_read_back": len(done), "n_failed": n_failed})
    if tracking:
        from mlflow import MlflowClient

        client = MlflowClient(tracking["uri"])
        rid = tracking["parent_run_id"]
        summary = {"n_trials": len(trials), "n_failed": n_failed, "n_run": len(pending), "n_read_back": len(done),
                   "wall_seconds": wall, "ray_startup_seconds": startup}
        if len(ranking):
            summary["best_val_psnr"] = float(ranking.iloc[0]["mean"])
        for k, v in summary.items():
            client.log_metric(rid, k, float(v))
        for name in ("results.csv", "results.md", "ranking.csv", "summary.md", "summary.json"):
            client.log_artifact(rid, str(out / name))
        client.log_artifacts(rid, str(out / "figures"), "figures")
        client.set_terminated(rid, "FAILED" if n_failed else "FINISHED")
    log.info("%s", text)
    if n_failed:
        log.error("%d trial(s) failed: %s (see %s)", n_failed, ", ".join(frame[frame["status"] != "finished"]["trial_id"]),
                  out / "summary.md")
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
