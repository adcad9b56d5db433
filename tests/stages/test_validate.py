"""The validate stage: what it checks beyond the config loader (the per-task sections that DVC
tracks) agrees with dvc.yaml, holds for the shipped params, and is refused with a clear message."""
from __future__ import annotations

import re

import pytest
import yaml

from pipeline.config import ConfigError
from stages.validate import TASK_SECTIONS, check_task_sections
from tests.conftest import ROOT, profile_dict, run_module


def declared_task_sections() -> set[str]:
    """The ``tasks.<task>.<section>`` params that dvc.yaml declares, by section."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = set()
    for stage in stages.values():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            if isinstance(entry, str) and (m := re.fullmatch(r"tasks\.\$\{item(?:\.task)?\}\.(\w+)", entry)):
                found.add(m.group(1))
    return found


def test_sections_are_those_dvc_yaml_tracks():
    assert declared_task_sections() == set(TASK_SECTIONS)


def test_shipped_params_and_profile_name_every_section():
    for data in (yaml.safe_load((ROOT / "params.yaml").read_text()), profile_dict()):
        check_task_sections(data, data["tasks"]["run"])  # raises if one is missing


def test_a_missing_section_is_named():
    data = profile_dict()
    del data["tasks"]["derain"]["tune"]
    with pytest.raises(ConfigError, match=r"tasks\.derain: .*missing or not a mapping: tune"):
        check_task_sections(data, ["deblur", "derain"])
    check_task_sections(data, ["deblur"])  # a task not run needs nothing
    data["tasks"]["deblur"]["model"] = None  # `model:` left empty is not a mapping
    with pytest.raises(ConfigError, match="missing or not a mapping: model"):
        check_task_sections(data, ["deblur"])


def test_the_stage_refuses_it_and_writes_no_stamp(tmp_path):
    data = profile_dict()
    del data["tasks"]["deblur"]["evaluate"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    done = run_module(tmp_path, "stages.validate", "--params", "params.yaml", "--out", "data/params.ok")
    assert done.returncode != 0
    assert "tasks.deblur: name every section" in done.stderr and "evaluate" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "data" / "params.ok").exists()
    data["tasks"]["deblur"]["evaluate"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    done = run_module(tmp_path, "stages.validate", "--params", "params.yaml", "--out", "data/params.ok")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "params.ok").read_text().startswith("params.yaml validated")
