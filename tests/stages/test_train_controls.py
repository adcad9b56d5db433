"""The controls train what their name says and nothing else: the resolved configuration of a
control differs from the learned model's of the same seed in ``model.guidance`` alone."""
from __future__ import annotations

import pytest

from conftest import ROOT
from pipeline.config import CONTROLS, flatten, to_dict
from stages.common import load_params
from stages.train import resolve


@pytest.mark.parametrize("task", ["deblur", "derain", "dehaze"])
@pytest.mark.parametrize("control", list(CONTROLS))
def test_a_control_differs_from_learned_only_in_its_guidance(task, control):
    params = load_params(ROOT / "params.yaml", task)
    learned, other = (flatten(to_dict(resolve(params, 2, g))) for g in (None, CONTROLS[control]))
    assert {k for k in learned if learned[k] != other[k]} == {"model.guidance"}
    assert other["model.guidance"] == CONTROLS[control] and learned["model.guidance"] == "learned"
    assert learned["base.seed"] == other["base.seed"] == 2


def test_the_seed_changes_the_training_seed_and_not_the_data_seed():
    params = load_params(ROOT / "params.yaml", "deblur")
    a, b = (flatten(to_dict(resolve(params, s, None))) for s in (0, 1))
    assert {k for k in a if a[k] != b[k]} == {"base.seed"} and a["base.split_seed"] == b["base.split_seed"]
