"""The one MLflow adapter: a run per stage execution, closed as FAILED when the stage raises.

Default store (nothing to start): ``sqlite:///mlflow.db`` with artifacts in ``mlartifacts/``,
both in the working directory (the project root under ``dvc repro``); ``MLFLOW_TRACKING_URI``
overrides it. ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the runs.

Models: the train stage logs the model in MLflow's PyTorch format (``pt2``: ``torch.export``,
no pickle) with the plain weights-only checkpoint alongside as an extra file; a model URI
(``runs:/<run>/model``, ``models:/<name>/<version>``) is resolved by downloading the artifacts
and loading that checkpoint with ``torch.load(weights_only=True)`` (:func:`fetch_checkpoint`):
nothing logged is ever unpickled here.
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
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
MODEL_URI_SCHEMES = ("runs:/", "models:/")


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

    from pipeline.io import InputError

    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:  # MlflowException, OSError: an unknown run, model or version
        raise InputError(f"cannot fetch MLflow model {uri} from {tracking_uri()}: {exc}") from exc
    spec = local / "MLmodel"
    if not spec.is_file():
        raise InputError(f"{uri}: not an MLflow model (no MLmodel file)")
    extra = (yaml.safe_load(spec.read_text()) or {}).get("flavors", {}).get("pytorch", {}).get("extra_files") or []
    for entry in extra:
        path = local / entry.get("path", "")
        if path.name == checkpoint_name and path.is_file():
            return path
    raise InputError(f"{uri}: the MLflow model carries no {checkpoint_name} checkpoint (logged by another tool?)")
