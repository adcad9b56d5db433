"""Hostile params: a typo or a bad value in params.yaml (or in a task's overrides) is named, with a
suggestion where there is one; a stage given one exits with code 2 before writing anything.

Other bad-params cases, inside tests that need their own setup:
- tests/stages/test_pipeline.py::test_dvc_repro_runs_every_task_side_by_side_then_noop_and_mlflow_runs
  (a typo under `dvc repro`: refused by the validate stage before DVC removes any output)
- tests/test_config.py::test_real_photos_are_for_rain_and_haze_only
- tests/bilevel/test_task_training.py::test_deblurring_variants_are_refused_for_the_task_models
- tests/stages/test_sweep_command.py::test_a_bad_sweep_file_is_refused_before_anything_starts
- tests/test_sweep.py::test_unknown_axes_and_out_of_range_values_are_refused
- tests/test_sweep.py::test_a_combination_no_single_value_reveals_is_refused_too
- tests/stages/test_task_pipeline.py::test_sweeps_refuse_rain_and_haze_clearly
"""
from __future__ import annotations

import pytest
import yaml

from conftest import profile_dict
from pipeline.config import ConfigError, params_from_dict
from stage_process import run_stage, write_params


@pytest.mark.parametrize("data, key", [
    ({"train": {"lerning_rate": 1}}, "train.lerning_rate"),
    ({"traim": {}}, "traim"),
    ({"degrade": {"noise": {"rnage": [1, 2]}}}, "degrade.noise.rnage"),
])
def test_unknown_keys_are_named_with_a_suggestion(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        params_from_dict(data)
    assert "did you mean" in str(exc.value) or "known keys" in str(exc.value)


@pytest.mark.parametrize("data, key", [
    ({"train": {"steps": "10"}}, "train.steps"),
    ({"train": {"steps": -1}}, "train.steps"),
    ({"train": {"strategy": "alternate"}}, "train.strategy"),
    ({"degrade": {"noise": {"range": [5, 1]}}}, "degrade.noise.range"),
    ({"degrade": {"kernels": {"max_size": 24}}}, "degrade.kernels.max_size"),
    ({"prepare": {"color": "yes"}}, "prepare.color"),
    ({"model": {"denoiser_dilations": [1, 0, 1]}}, "model.denoiser_dilations"),
    ({"train": []}, "train"),
])
def test_bad_values_are_named(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        params_from_dict(data)


@pytest.mark.parametrize("tasks, message", [
    ({"derian": {}}, "unknown key 'tasks.derian'; did you mean 'derain'?"),
    ({"dehaze": {"train": {"stpes": 1}}}, "unknown key 'train.stpes'; did you mean 'steps'? (task dehaze"),
    ({"derain": {"model": {"proxy_sharing": "per_stage"}}}, "model.proxy_sharing: only 'once' for task derain"),
    ({"derain": {"base": {"task": "dehaze"}}}, "tasks.derain: may not set"),
    ({"derain": [1]}, "tasks.derain: expected a mapping"),
    ({"run": ["deblur", "deblur"]}, "tasks.run: names a task twice"),
    ({"run": ["debulr"]}, "did you mean 'deblur'?"),
    ({"run": []}, "tasks.run: must name at least one task"),
    ({"controls": ["no_guidnace"]}, "tasks.controls: unknown ['no_guidnace']"),
    ({"controls": ["no_guidance", "no_guidance"]}, "tasks.controls: names a control twice"),
    ({"control": []}, "did you mean 'controls'?"),
])
def test_tasks_section_errors_are_named_whatever_task_is_asked(tasks, message):
    # a typo in any task's overrides fails every stage, not only that task's
    with pytest.raises(ConfigError) as err:
        params_from_dict({"tasks": tasks}, "deblur")
    assert message in str(err.value)


def test_unknown_key_in_params_is_named(tmp_path):
    params = profile_dict()
    params["train"]["stesp"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2
    assert "train.stesp" in res.stderr and "did you mean 'steps'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_type_in_params_is_named(tmp_path):
    write_params(tmp_path / "params.yaml", **{"train.steps": "many"})
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2 and "train.steps" in res.stderr


@pytest.mark.parametrize("base, message", [
    ({"seeds": []}, "base.seeds: must name at least one seed"),
    ({"seeds": [0, 1, 0]}, "base.seeds: names a seed twice"),
    ({"split_seed": -1}, "must be >= 0"),
    ({"seeds": 3}, "base.seeds"),
])
def test_seed_errors_are_named(base, message):
    with pytest.raises(ConfigError) as err:
        params_from_dict({"base": base})
    assert message in str(err.value)
