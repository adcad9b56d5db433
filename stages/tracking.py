"""The one MLflow adapter: a run per stage execution, closed as FAILED when the stage raises.

Default store (nothing to start): ``sqlite:///mlflow.db`` with artifacts in ``mlartifacts/``,
both in the working directory (the project root under ``dvc repro``); ``MLFLOW_TRACKING_URI``
overrides it. ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the runs; each stage
logs the address of its experiment's runs table (:func:`runs_url`).

Models: the train stage logs the model in MLflow's PyTorch format (``pt2``: ``torch.export``,
no pickle) with the plain weights-only checkpoint alongside as an extra file; a model URI
(``runs:/<run>/model``, ``models:/<name>/<version>``) is resolved by downloading the artifacts
and loading that checkpoint with ``torch.load(weights_only=True)`` (:func:`fetch_checkpoint`):
nothing logged is ever unpickled here.

Sweeps: one parent run per sweep (:func:`open_sweep_run`, re-opened on a re-launch), a child run
per trial logged from the trial's own process (:func:`log_trial_run`: through ``MlflowClient``,
no process-wide active run, retried while a SQLite store is locked by another trial), closed
with the sweep's totals and tables (:func:`close_sweep_run`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from pipeline import io
from pipeline.config import Params, flatten

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACT_DIR = "mlartifacts"
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
MODEL_URI_SCHEMES = ("runs:/", "models:/")
EXPERIMENT_PREFIX = "hyperguide"  # one experiment per task: hyperguide-deblur, ...
# MLflow 3 sorts experiments into GenAI and model development; ours are the latter
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
UI_ADDRESS = "http://127.0.0.1:5000"  # `mlflow ui`'s default
T = TypeVar("T")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """What a stage may do with its run; every call goes to MLflow."""

    def __init__(self, mlflow_module: Any, run: Any):
        self._mlflow, self.run = mlflow_module, run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=artifact_path or path.name)
        elif path.exists():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)

    def log_pytorch_model(self, module: Any, checkpoint: str | Path, input_example: Any, output_channels: int,
                          metadata: dict[str, Any], registered_model_name: str | None = None) -> str:
        """Log ``module`` (one float32 tensor ``(B, C_in, H, W)`` in, ``(B, output_channels, H, W)``
        out) as an MLflow PyTorch model named ``model``, exported with ``torch.export`` (pt2),
        with its signature, ``metadata`` (also as the logged model's params) and ``checkpoint``
        as an extra file; registered under ``registered_model_name`` when given. Returns the
        model's URI."""
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        c_in = int(input_example.shape[1])
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c_in, -1, -1), "observation_and_psf")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, output_channels, -1, -1), "restored")]))
        info = self._mlflow.pytorch.log_model(
            module, name=MODEL_NAME, signature=signature, input_example=input_example,
            serialization_format="pt2", extra_files=[str(checkpoint)], metadata=metadata,
            params={k: str(v) for k, v in metadata.items()}, registered_model_name=registered_model_name,
            # explicit requirements: inferring them would load the model in a subprocess
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            # MLflow's serving check sends JSON lists, which its PyTorch flavour refuses for tensors
            validate_serving_input=False)
        return info.model_uri


def experiment_name(task: str) -> str:
    return f"{EXPERIMENT_PREFIX}-{task}"


def experiment_id(name: str) -> str:
    """The id of the experiment ``name`` in the current tracking URI, created when missing (the
    default store keeps its artifacts in ``mlartifacts/``), tagged as model development
    (:data:`EXPERIMENT_TAGS`; an older experiment gets the tag too)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        for key, value in EXPERIMENT_TAGS.items():
            if exp.tags.get(key) != value:
                mlflow.MlflowClient(tracking_uri()).set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = None
    if tracking_uri() == DEFAULT_URI:
        location = Path(ARTIFACT_DIR).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)


def runs_url(experiment: str, uri: str | None = None) -> str:
    """Where ``mlflow ui`` shows the runs of ``experiment`` (an id): the tracking server itself for
    an ``http(s)://`` URI, else the address ``mlflow ui`` serves on by default. The query opens
    the runs table: MLflow 3's UI otherwise lands on its GenAI overview ("Traces: 0")."""
    uri = uri or tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): os.kill said it exists
        return True


def close_orphans(experiment: str, stage: str, task: str) -> list[str]:
    """End as KILLED the runs of ``stage`` for ``task`` left RUNNING by a process of this machine
    that is gone (``kill -9``, a lost power): they would stay RUNNING in ``mlflow ui`` forever.
    Runs of another machine, or of a process still alive, are left alone. Returns their ids,
    newest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri())
    found = client.search_runs([experiment], f"attributes.status = 'RUNNING' and tags.dvc_stage = '{stage}' "
                                             f"and tags.task = '{task}' and tags.host = '{socket.gethostname()}'",
                               order_by=["attributes.start_time DESC"])
    closed = []
    for run in found:
        pid = run.data.tags.get("pid", "")
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
            log.warning("MLflow run %s (%s, process %s) was left RUNNING by a killed process: ended KILLED",
                        run.info.run_id, stage, pid)
    return closed


@contextlib.contextmanager
def stage_run(stage: str, params: Params, extra_tags: dict[str, str] | None = None) -> Iterator[Tracker]:
    """Open an MLflow run for one execution of ``stage`` in the experiment of the task.

    Logs every parameter (flattened, ``train.lr``...), tags the git commit, the DVC stage, the
    machine and the process. The run ends FINISHED, or FAILED (KILLED on Ctrl-C or SIGTERM) when
    the body raises. A run that a killed process left RUNNING is ended KILLED by the next run of
    the same stage and task (:func:`close_orphans`), which names it in its ``resumes_run`` tag.
    """
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    experiment = experiment_id(experiment_name(params.base.task))
    orphans = close_orphans(experiment, stage, params.base.task)
    tags = {"dvc_stage": stage, "git_commit": git_commit(), "task": params.base.task, "host": socket.gethostname(),
            "pid": str(os.getpid()), **({"resumes_run": orphans[0]} if orphans else {}), **(extra_tags or {})}
    run = mlflow.start_run(experiment_id=experiment, run_name=stage, tags=tags)
    tracker = Tracker(mlflow, run)
    status = "FINISHED"
    try:
        tracker.log_params(flatten(params))
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status=status)
        log.info("MLflow run %s (%s) ended %s; the runs: %s", run.info.run_id, stage, status, runs_url(experiment))


@contextlib.contextmanager
def scratch_run(folder: str | Path, experiment: str) -> Iterator[Tracker]:
    """A run in a throwaway SQLite store under ``folder`` (benchmarks): ``folder/mlflow.db``, its
    artifacts in ``folder/artifacts``."""
    import mlflow

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    exp = mlflow.create_experiment(experiment, artifact_location=(folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        yield Tracker(mlflow, run)


# -- sweeps: a parent run per sweep, a child run per trial -------------------------------------
@dataclass(frozen=True)
class SweepRun:
    """The sweep's parent run, as its trials need it (sent to every Ray task)."""

    uri: str  # absolute: the trials may run in another folder or on another node
    experiment_id: str
    parent_run_id: str
    sweep: str


def _absolute_uri() -> str:
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _with_retries(fn: Callable[[], T], what: str, tries: int = 5) -> T:
    """SQLite-backed MLflow stores refuse concurrent writers for a moment: retry with backoff."""
    for i in range(tries - 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the store's error types vary by backend
            if "locked" not in str(exc).lower():
                raise
            log.warning("%s: %s; retrying", what, exc)
            time.sleep(0.5 * 2**i)
    return fn()


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in values.items()]


def open_sweep_run(state_file: str | Path, sweep: str, task: str, params: dict[str, Any]) -> SweepRun:
    """The sweep's parent run in the task's experiment: re-opened (RUNNING again) when
    ``state_file`` names one that still exists for this sweep, else a new one logging ``params``
    (``state_file`` then names it)."""
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = _absolute_uri()
    mlflow.set_tracking_uri(uri)
    exp_id = experiment_id(experiment_name(task))
    client = MlflowClient(uri)
    state_file = Path(state_file)
    if state_file.exists():
        state = json.loads(state_file.read_text())
        try:
            run = client.get_run(state["parent_run_id"])
            if run.info.experiment_id == exp_id and state.get("sweep") == sweep:
                client.update_run(run.info.run_id, status="RUNNING")
                return SweepRun(uri, exp_id, run.info.run_id, sweep)
        except Exception:  # noqa: BLE001 - another store, a deleted run: start a new parent
            pass
    run = client.create_run(exp_id, run_name=f"sweep:{sweep}",
                            tags={"dvc_stage": "sweep", "git_commit": git_commit(), "task": task, "sweep": sweep})
    client.log_batch(run.info.run_id, params=_params(params))
    io.write_json(state_file, {"parent_run_id": run.info.run_id, "sweep": sweep})
    return SweepRun(uri, exp_id, run.info.run_id, sweep)


def log_trial_run(sweep: SweepRun, trial_id: str, params: dict[str, Any], history: list[dict],
                  metrics: dict[str, float], status: str, tags: dict[str, str], pretrain_steps: int = 0) -> str:
    """A child run of the sweep's parent, ended ``status``: ``params``, the training curves
    (``history`` rows, bilevel steps after the ``pretrain_steps``), the final ``metrics``
    (``val_psnr@3`` logged as ``val_psnr/noise_3``). Returns its run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(sweep.uri)
    run_tags = {"mlflow.parentRunId": sweep.parent_run_id, "sweep": sweep.sweep, "trial_id": trial_id,
                "dvc_stage": "sweep", **tags}
    run = _with_retries(lambda: client.create_run(sweep.experiment_id, run_name=trial_id, tags=run_tags), "create_run")
    run_id = run.info.run_id
    now = int(time.time() * 1000)

    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    series = [Metric(f"{row['phase']}/{k}", float(v), now, (0 if row["phase"] == "pretrain" else pretrain_steps)
                     + int(row["step"])) for row in history for k, v in row.items()
              if k not in ("phase", "step") and finite(v)]
    finals = [Metric(k.replace("@", "/noise_"), float(v), now, 0) for k, v in metrics.items() if finite(v)]
    entries = _params(params)
    for i in range(0, len(entries), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        chunk = entries[i:i + 100]
        _with_retries(lambda: client.log_batch(run_id, params=chunk), "log_batch")
    every = series + finals
    for i in range(0, len(every), 1000):
        chunk = every[i:i + 1000]
        _with_retries(lambda: client.log_batch(run_id, metrics=chunk, tags=[RunTag("status", status)]), "log_batch")
    _with_retries(lambda: client.set_terminated(run_id, status), "set_terminated")
    return run_id


def close_sweep_run(sweep: SweepRun, metrics: dict[str, float], artifacts: list[Path], failed: bool) -> None:
    """End the parent run (FAILED when a trial failed) with the sweep's ``metrics`` and
    ``artifacts`` (files, and folders under their own name)."""
    from mlflow import MlflowClient

    client = MlflowClient(sweep.uri)
    rid = sweep.parent_run_id
    for k, v in metrics.items():
        client.log_metric(rid, k, float(v))
    for path in artifacts:
        if path.is_dir():
            client.log_artifacts(rid, str(path), path.name)
        else:
            client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FAILED" if failed else "FINISHED")


def is_model_uri(ref: str) -> bool:
    """``runs:/...`` or ``models:/...`` (anything else is a local checkpoint path)."""
    return ref.startswith(MODEL_URI_SCHEMES)


def fetch_checkpoint(uri: str, dst: str | Path, checkpoint_name: str = "model.pt") -> Path:
    """Download the MLflow model at ``uri`` into ``dst`` and return its plain checkpoint file
    (the extra file logged by :meth:`Tracker.log_pytorch_model`), to be read with
    ``torch.load(weights_only=True)``. Raises InputError for an unknown URI or a model
    without such a checkpoint."""
    import mlflow
    import yaml

    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:  # MlflowException, OSError: an unknown run, model or version
        raise io.InputError(f"cannot fetch MLflow model {uri} from {tracking_uri()}: {exc}") from exc
    spec = local / "MLmodel"
    if not spec.is_file():
        raise io.InputError(f"{uri}: not an MLflow model (no MLmodel file)")
    extra = (yaml.safe_load(spec.read_text()) or {}).get("flavors", {}).get("pytorch", {}).get("extra_files") or []
    for entry in extra:
        path = local / entry.get("path", "")
        if path.name == checkpoint_name and path.is_file():
            return path
    raise io.InputError(f"{uri}: the MLflow model carries no {checkpoint_name} checkpoint (logged by another tool?)")
