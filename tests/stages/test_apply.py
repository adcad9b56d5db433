"""``python -m stages.apply``: an overrides file merged into a params file, comments kept; a
result that would not validate is refused with the file untouched."""
from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import ROOT, project_env
from pipeline.config import params_from_dict


def apply(cwd, *args):
    return subprocess.run([sys.executable, "-m", "stages.apply", *args], cwd=cwd, env=project_env(ROOT),
                          capture_output=True, text=True, timeout=120)


def test_apply_merges_keeps_comments_and_refuses_a_typo_without_touching_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    original = params.read_text()
    (tmp_path / "o.yaml").write_text("model: {stages: 4}\ntasks:\n  deblur: {train: {steps: 9}}\n")
    dry = apply(tmp_path, "o.yaml", "--dry-run")
    assert dry.returncode == 0 and "would change model.stages: 5 -> 4" in dry.stderr and params.read_text() == original
    done = apply(tmp_path, "o.yaml")
    assert done.returncode == 0, done.stderr
    text = params.read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines()) if a != b]
    assert changed[0] == ("  stages: 5", "  stages: 4")  # the same line, its neighbours and comments kept
    assert "# hyperguide parameters" in text and "# deblur | derain | dehaze" in text
    deblur, derain = params_from_dict(yaml.safe_load(text), "deblur"), params_from_dict(yaml.safe_load(text), "derain")
    assert (deblur.model.stages, deblur.train.steps) == (4, 9) and derain.train.steps == 200  # derain: its own override

    (tmp_path / "bad.yaml").write_text("train: {stpes: 3}\n")
    bad = apply(tmp_path, "bad.yaml")
    assert bad.returncode == 2 and "did you mean 'steps'" in bad.stderr and "is unchanged" in bad.stderr
    assert params.read_text() == text
