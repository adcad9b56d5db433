"""Shared fixtures: the shrunken test profile, odd non-square images, seeded generators."""
from __future__ import annotations

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
