"""Shared fixtures: the shrunken test profile, odd non-square images, seeded generators."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import Params, merge, params_from_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(2)


def profile_dict() -> dict:
    """params.yaml with profiles/test.yaml merged on top (the whole chain in well under 90 s)."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge(base, yaml.safe_load((ROOT / "profiles" / "test.yaml").read_text()))


@pytest.fixture
def test_params() -> Params:
    return params_from_dict(profile_dict())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def odd_image(rng) -> torch.Tensor:
    """``(2, 1, 37, 29)`` float64: odd and non-square, so transposed axes get caught."""
    return torch.from_numpy(rng.random((2, 1, 37, 29)))


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skip = {".venv", ".git", "data", "models", "results", "checkpoints", "reports", "mlflow.db", "mlartifacts",
            "mlruns", "__pycache__", ".pytest_cache", "cache", "tmp", "optuna.db"}
    return {n for n in names if n in skip}


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A fresh git + DVC copy of the project with the test profile as its params.yaml."""
    dst = tmp_path / "project"
    shutil.copytree(ROOT, dst, ignore=_copy_ignore)
    (dst / "params.yaml").write_text(yaml.safe_dump(profile_dict(), sort_keys=False))
    if (dst / "dvc.lock").exists():
        (dst / "dvc.lock").unlink()
    env = project_env(dst)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env, capture_output=True)
    return dst


def project_env(root: Path) -> dict[str, str]:
    """Environment for running stages in ``root``: this interpreter first on PATH, MLflow in ``root``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(root)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["DVC_NO_ANALYTICS"] = "1"
    return env
