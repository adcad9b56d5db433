"""Shared fixtures: the shrunken test profile, odd non-square images, seeded generators; the test
profile's deblurring data written by the stages (for the sweep tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import Params, merge, params_from_dict
from project_copy import ROOT, copy_project, project_env  # noqa: F401  (re-exported for tests)
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


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A fresh git + DVC copy of the project with the test profile as its params.yaml."""
    return copy_project(tmp_path / "project", yaml.safe_dump(profile_dict(), sort_keys=False))


def run_module(cwd: Path, *args: str, timeout: int = 400, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in ``cwd`` with the project importable (``env`` added to the environment)."""
    full = {**project_env(cwd), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def deblur_split(root: Path) -> Path:
    """``root`` with the test profile's params.yaml and its prepared and degraded deblurring data
    (``data/deblur/...``: 1 validation image x 2 noise levels), written by the stages."""
    (root / "params.yaml").write_text(yaml.safe_dump(profile_dict(), sort_keys=False))
    for cmd in (["stages.prepare", "--out", "data/deblur/prepared"],
                ["stages.degrade", "--prepared", "data/deblur/prepared", "--out", "data/deblur/degraded"]):
        done = run_module(root, *cmd, "--params", "params.yaml", "--quiet")
        assert done.returncode == 0, done.stderr[-2000:]
    return root


class Interrupted(Exception):
    """Raised by :func:`interrupt_at`: a training run stopped from outside, as by a kill."""


def interrupt_at(phase: str, step: int):
    """A trainer ``log_fn`` that stops the run when it logs ``phase`` step ``step``."""
    def log_fn(row: dict) -> None:
        if row["phase"] == phase and row["step"] == step:
            raise Interrupted(f"{phase} step {step}")
    return log_fn
