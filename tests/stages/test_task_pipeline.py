"""Rain and haze through the real pipeline: `dvc repro` of the test profile per task in a
temporary copy, and a user depth map of the wrong size refused at the degrade stage."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, copy_project, profile_dict, project_env
from pipeline import io

TRUTH = {"derain": {"y", "target", "streaks", "density"}, "dehaze": {"y", "target", "t", "airlight", "depth"}}


def task_params(task: str, **degrade) -> dict:
    params = profile_dict()
    params["base"]["task"] = task
    params["degrade"].setdefault({"derain": "rain", "dehaze": "haze"}[task], {}).update(degrade)
    return params


@pytest.mark.slow
@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_dvc_repro_of_the_test_profile(task, tmp_path):
    root = copy_project(tmp_path / "project", yaml.safe_dump(task_params(task, per_image=1), sort_keys=False))
    res = subprocess.run(["dvc", "repro"], cwd=root, env=project_env(root), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    metrics = json.loads((root / "results" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["noise_levels"] == [] and metrics["n_images"] == 2
    assert set(metrics["methods"]) == {"input", "learned", "classical"}
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
    assert math.isfinite(metrics["guidance_mae"])
    samples = io.read_csv(root / "data" / "degraded" / "samples.csv")
    assert {r["split"] for r in samples} == {"val", "test"} and len(samples) == 3  # 2 test + 1 val images, 1 draw each
    arrays = io.load_npz(root / "data" / "degraded" / "samples" / f"{samples[0]['sample_id']}.npz")
    assert set(arrays) == TRUTH[task] and arrays["y"].shape[0] == 3 and arrays["target"].shape == (1, *arrays["y"].shape[1:])
    assert yaml.safe_load((root / "tuned.yaml").read_text()) == {"task": task, "skipped": True}
    report = (root / "reports" / "report.md").read_text()
    assert f"Task **{task}**" in report and {"derain": "rain density", "dehaze": "residual level"}[task] in report
    assert (root / "reports" / "index.html").stat().st_size > 1000

    from pipeline.checkpoint import load_model
    from pipeline.models.factory import TASK_MODELS
    assert isinstance(load_model(root / "models" / "model.pt", task=task)[0], TASK_MODELS[task])
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[f"hyperguide-{task}"], output_format="list")
    assert {r.data.tags["dvc_stage"] for r in runs} == {"prepare", "degrade", "train", "tune", "evaluate", "report"}
    assert all(r.info.status == "FINISHED" for r in runs)


def run_stage(cwd, stage, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def test_depth_maps_are_used_and_a_wrong_size_is_refused(tmp_path):
    depth = tmp_path / "depth"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(task_params("dehaze", per_image=1, depth_folder=str(depth))))
    assert run_stage(tmp_path, "prepare", "--out", "prepared").returncode == 0
    rows = [r for r in io.read_csv(tmp_path / "prepared" / "manifest.csv") if r["split"] != "train"]
    for r in rows:  # at the prepared size: a ramp, far at the top
        ramp = np.linspace(1.0, 0.0, int(r["height"]))[:, None] * np.ones((1, int(r["width"])))
        io.write_image(depth / f"{r['name']}.png", ramp, bits=16)
    assert run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded").returncode == 0
    samples = io.read_csv(tmp_path / "degraded" / "samples.csv")
    assert {s["haze_depth"] for s in samples} == {"given"}
    t = io.load_npz(tmp_path / "degraded" / "samples" / f"{samples[0]['sample_id']}.npz")["t"][0]
    assert (np.diff(t.mean(axis=1)) >= -1e-6).all()  # transmission rises towards the (near) bottom

    bad = rows[-1]["name"]
    io.write_image(depth / f"{bad}.png", np.ones((20, 30)) * 0.5)
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded2")
    assert res.returncode == 2 and f"{bad}.png" in res.stderr and "20x30" in res.stderr
    assert not (tmp_path / "degraded2").exists()
    (depth / f"{bad}.png").unlink()
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded2")
    assert res.returncode == 2 and "no depth map" in res.stderr and bad in res.stderr


def test_sweeps_refuse_rain_and_haze_clearly(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(task_params("derain")))
    res = run_stage(tmp_path, "sweep", "--sweep", str(ROOT / "sweeps" / "tiny.yaml"), "--no-tracking")
    assert res.returncode == 2 and "base.task derain" in res.stderr and "deblur only" in res.stderr
