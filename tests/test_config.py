"""Config: defaults valid, params.yaml and the test profile valid, task overrides applied. Typos and
bad values named: tests/hostile/test_params.py."""
import pytest
import yaml

from conftest import ROOT, profile_dict
from pipeline.config import ConfigError, Params, flatten, merge, params_from_dict, to_dict


def test_params_yaml_is_valid_and_round_trips():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = params_from_dict(data)
    assert params.model.stages == 5 and params.train.strategy == "alternating"
    assert params_from_dict(to_dict(params)) == params
    assert params_from_dict(profile_dict()).model.stages == 2


def test_defaults_are_valid():
    assert params_from_dict({}) == Params()


def test_flatten_and_merge():
    flat = flatten(Params())
    assert flat["train.lr"] == 1e-3 and flat["degrade.noise.range"] == [1.0, 7.0]
    merged = merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3}


def test_tasks_overrides_apply_to_their_task_only():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params_from_dict(data).tasks.run == ("deblur", "derain", "dehaze")
    data["tasks"]["derain"] = {"train": {"steps": 7}, "model": {"stages": 2}}
    derain, deblur = params_from_dict(data, "derain"), params_from_dict(data, "deblur")
    assert derain.base.task == "derain" and derain.train.steps == 7 and derain.model.stages == 2
    assert deblur.base.task == "deblur" and deblur.train.steps == 400 and deblur.model.stages == 5
    assert params_from_dict({**data, "base": {"task": "derain"}}) == derain  # no --task: base.task picks


def test_real_photos_are_for_rain_and_haze_only():
    data = {"tasks": {"dehaze": {"evaluate": {"real_folder": "photos"}}}}
    assert params_from_dict(data, "dehaze").evaluate.real_folder == "photos"
    assert params_from_dict(data, "deblur").evaluate.real_folder == ""
    with pytest.raises(ConfigError, match="evaluate.real_folder: rain and haze only"):
        params_from_dict({"evaluate": {"real_folder": "photos"}}, "dehaze")  # the deblur task is checked too


def test_every_control_and_one_seed_by_default_with_the_data_seed_apart():
    p = params_from_dict({})
    assert p.tasks.controls == ("no_guidance", "estimated_guidance", "direct_cnn") and p.base.seeds == (0,) and p.base.split_seed == 0
    assert params_from_dict({"tasks": {"controls": []}}).tasks.controls == ()
    assert params_from_dict({"base": {"seeds": [3, 1], "split_seed": 7}}).base.seeds == (3, 1)
