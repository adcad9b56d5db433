"""Bad input: a clear error naming the file or key, exit code 2, no partial output, FAILED run."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, project_env, profile_dict


def run_stage(cwd, stage, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def write_params(path, **overrides):
    params = profile_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params))
    return path


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


def test_corrupt_image_is_refused_and_the_run_fails(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(5):
        from pipeline.io import write_image
        write_image(images / f"ok{i}.png", np.random.default_rng(i).random((40, 40)))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    write_params(tmp_path / "params.yaml", **{"prepare.source": "folder", "prepare.folders": [str(images)],
                                               "prepare.holdout": []})
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2 and "broken.png" in res.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["hyperguide-deblur"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    write_params(tmp_path / "params.yaml", **{"prepare.source": "folder", "prepare.folders": [str(tmp_path / "empty")]})
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2 and "no images" in res.stderr and "empty" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["negative", "nan"])
def test_bad_kernel_file_is_refused_without_partial_output(tmp_path, bad):
    k = np.ones((5, 5), np.float32)
    k[1, 2] = -0.5 if bad == "negative" else np.nan
    np.save(tmp_path / "kernels.npy", k)
    write_params(tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["degrade"]["kernels"].update(source="file", file=str(tmp_path / "kernels.npy"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(tmp_path, "prepare", "--out", "prepared").returncode == 0
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded")
    assert res.returncode == 2 and "kernels.npy" in res.stderr
    assert ("negative" in res.stderr) if bad == "negative" else ("NaN" in res.stderr or "nan" in res.stderr.lower())
    assert not (tmp_path / "degraded").exists()
