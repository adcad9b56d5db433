"""The real tools end to end: `dvc repro` of the test profile, a no-op re-run, MLflow runs."""
from __future__ import annotations

import json
import math
import subprocess
import time

import pytest

from conftest import project_env
from pipeline.evaluation import ALL_METHODS

STAGES = {"prepare", "degrade", "train", "tune", "evaluate", "report"}


def dvc(root, *args, timeout=600):
    return subprocess.run(["dvc", *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_dvc_repro_test_profile_then_noop_and_mlflow_runs(project_copy):
    t0 = time.perf_counter()
    first = dvc(project_copy, "repro")
    chain_seconds = time.perf_counter() - t0
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"test-profile chain: {chain_seconds:.1f} s")

    metrics = json.loads((project_copy / "results" / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(ALL_METHODS)
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
        assert set(entry["psnr"]) == {"1", "5"}, name
    assert (project_copy / "reports" / "index.html").stat().st_size > 1000
    assert (project_copy / "models" / "model.pt").exists()
    assert (project_copy / "dvc.lock").exists()

    shown = dvc(project_copy, "metrics", "show", "--json")
    assert shown.returncode == 0 and "learned" in shown.stdout

    t0 = time.perf_counter()
    second = dvc(project_copy, "repro")
    noop_seconds = time.perf_counter() - t0
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Running stage" not in second.stdout, second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    print(f"no-op repro: {noop_seconds:.1f} s")

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["hyperguide-deblur"], output_format="list")
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs}
    assert set(by_stage) == STAGES
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_stage["train"]
    assert train.data.params["train.strategy"] == "alternating"
    assert "bilevel/loss" in train.data.metrics
    assert by_stage["evaluate"].data.metrics["learned/psnr_mean"] == pytest.approx(metrics["methods"]["learned"]["psnr_mean"])
    assert len(train.data.tags["git_commit"]) == 40
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(train.info.run_id)}
    assert "model" in artifacts
