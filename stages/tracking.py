"""The one MLflow adapter: a run per stage execution, closed as FAILED when the stage raises.

Default store (nothing to start): ``sqlite:///mlflow.db`` with artifacts in ``mlartifacts/``,
both in the working directory (the project root under ``dvc repro``); ``MLFLOW_TRACKING_URI``
overrides it. ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from pipeline.config import Params, flatten

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACT_DIR = "mlartifacts"


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


def _experiment_id(mlflow_module: Any, name: str) -> str:
    exp = mlflow_module.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri() == DEFAULT_URI:
        location = Path(ARTIFACT_DIR).resolve().as_uri()
    return mlflow_module.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def stage_run(stage: str, params: Params, extra_tags: dict[str, str] | None = None) -> Iterator[Tracker]:
    """Open an MLflow run for one execution of ``stage`` in the experiment of the task.

    Logs every parameter (flattened, ``train.lr``...), tags the git commit and the DVC stage.
    The run ends FINISHED, or FAILED (KILLED on Ctrl-C) when the body raises: never left RUNNING.
    """
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = _experiment_id(mlflow, f"hyperguide-{params.base.task}")
    tags = {"dvc_stage": stage, "git_commit": git_commit(), "task": params.base.task, **(extra_tags or {})}
    run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags)
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
        log.info("MLflow run %s (%s) ended %s", run.info.run_id, stage, status)
