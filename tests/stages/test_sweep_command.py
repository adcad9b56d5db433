"""The sweep command on a local Ray with 2 CPUs: two trials, one whose worker dies once (retried
from its checkpoint), the table and the MLflow parent/child runs; a re-launch recomputes nothing;
a trial whose worker dies past its retries is a failure everywhere; a bad sweep file is refused
before anything starts; Ray Train's two workers follow one worker's loss curve."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, deblur_split, profile_dict, project_env, run_module as run
from pipeline.config import params_from_dict

SWEEP = {"name": "t2", "seeds": [0], "resources": {"num_cpus": 1}, "max_retries": 2,
         "axes": {"strategy": ["alternating", "unrolled"]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return deblur_split(tmp_path_factory.mktemp("sweep"))


def sweep(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(root, "stages.sweep", "--params", "params.yaml", "--sweep", "s.yaml", "--out", "out", "--num-cpus", "2",
               "--object-store-mb", "100", "--quiet", *extra)


@pytest.mark.slow
def test_two_trials_one_killed_once_then_a_relaunch_that_recomputes_nothing(data):
    (data / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    # the worker of the first trial dies at bilevel step 4; the last checkpoint is at step 3
    first = sweep(data, "--inject-fault", "0@4")
    assert first.returncode == 0, first.stderr[-4000:]
    out = data / "out"
    table = (out / "results.csv").read_text()
    assert table.count("finished") == 2 and (out / "results.md").exists() and (out / "figures" / "psnr_by_noise.png").exists()
    killed = json.loads((out / "trials" / "strategy=alternating__seed=0" / "result.json").read_text())
    assert killed["attempts"] == 2 and killed["resumed_from"] == 3
    other = json.loads((out / "trials" / "strategy=unrolled__seed=0" / "result.json").read_text())
    assert other["attempts"] == 1 and other["resumed_from"] is None
    assert "Best on the validation split" in (out / "summary.md").read_text()

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hyperguide-deblur")
    runs = client.search_runs([exp.experiment_id], "tags.dvc_stage = 'sweep'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.info.run_name for c in children} == {"strategy=alternating__seed=0", "strategy=unrolled__seed=0"}
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all("val_psnr" in c.data.metrics and c.data.params["train.strategy"] for c in children)
    assert len(client.get_metric_history(children[0].info.run_id, "bilevel/loss")) == 2  # the curve

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")}
    again = sweep(data)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "2 already finished (read back), 0 to run" in again.stderr
    assert json.loads((out / "run.json").read_text())["n_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/*/result.json")} == stamps
    assert (out / "results.csv").read_text() == table
    runs = client.search_runs([exp.experiment_id], "tags.dvc_stage = 'sweep'")
    assert len(runs) == 3  # the same parent re-opened, no new child


@pytest.mark.slow
def test_a_trial_dead_past_its_retries_is_listed_and_the_command_exits_1(data):
    (data / "f.yaml").write_text(yaml.safe_dump({**SWEEP, "name": "f1", "max_retries": 0,
                                                 "axes": {"strategy": ["alternating"]}}))
    done = run(data, "stages.sweep", "--params", "params.yaml", "--sweep", "f.yaml", "--out", "f_out", "--num-cpus", "1",
               "--object-store-mb", "100", "--quiet", "--inject-fault", "0@2")
    assert done.returncode == 1, done.stderr[-4000:]
    out = data / "f_out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_failed"] == 1 and summary["failed"] == ["strategy=alternating__seed=0"]
    assert "## Failures" in (out / "summary.md").read_text()
    assert json.loads((out / "trials" / "strategy=alternating__seed=0" / "failed.json").read_text())["attempts"] == 1

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hyperguide-deblur")
    runs = client.search_runs([exp.experiment_id], "tags.sweep = 'f1'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the parent and its child


@pytest.mark.parametrize("axes,message", [({"strategy": ["alternating"], "model.stagse": [2]}, "did you mean 'model.stages'"),
                                          ({"K": [0]}, "value 0 refused")])
def test_a_bad_sweep_file_is_refused_before_anything_starts(data, axes, message):
    (data / "bad.yaml").write_text(yaml.safe_dump({**SWEEP, "axes": axes}))
    done = run(data, "stages.sweep", "--params", "params.yaml", "--sweep", "bad.yaml", "--out", "bad_out", "--quiet",
               timeout=120)
    assert done.returncode == 2 and message in done.stderr
    assert not (data / "bad_out").exists()


@pytest.mark.slow
def test_two_ray_train_workers_follow_one_workers_loss_curve(data, tmp_path):
    """Same global batch (2 patches): one process vs two gloo workers with one patch each.
    Tolerance: relative 1e-5 (the sums of the all-reduce run in another order)."""
    from stages import ray_adapter
    from stages.sweep_trial import train_data_parallel
    from pipeline.bilevel.setup import train

    params = params_from_dict(profile_dict())
    one = dataclasses.replace(params, train=dataclasses.replace(params.train, num_workers=1))
    two = dataclasses.replace(params, train=dataclasses.replace(params.train, num_workers=2))
    prepared, degraded = data / "data" / "deblur" / "prepared", data / "data" / "deblur" / "degraded"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        reference = train(one, prepared, degraded, None, torch.device("cpu"))[0].history
    finally:
        torch.set_num_threads(threads)
    with ray_adapter.cluster(num_cpus=2, object_store_mb=100):
        state = train_data_parallel(two, prepared, degraded, tmp_path / "ckpt.pt", tmp_path / "model.pt", 1, 0)
    got = state["history"]
    assert [(r["phase"], r["step"]) for r in got] == [(r["phase"], r["step"]) for r in reference]
    for a, b in zip(reference, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
        assert b["val_psnr"] == pytest.approx(a["val_psnr"], rel=1e-5), (a, b)


@pytest.mark.slow
def test_the_winner_applied_to_params_trains_to_the_same_validation_psnr(data, tmp_path):
    """best.yaml -> `stages.sweep --apply` -> the train stage (what `dvc repro` runs): the same
    resolved config as the winning trial, and the same validation PSNR (one torch thread, as the
    trial had)."""
    from pipeline import datasets
    from pipeline.checkpoint import load_model
    from pipeline.sweep import evaluate_validation

    (data / "w.yaml").write_text(yaml.safe_dump({**SWEEP, "name": "w2", "overrides": {"train": {"steps": 8}},
                                                 "axes": {"K": [1, 2]}}))
    done = run(data, "stages.sweep", "--params", "params.yaml", "--sweep", "w.yaml", "--out", "w_out", "--num-cpus", "2",
               "--object-store-mb", "100", "--quiet", "--no-tracking")
    assert done.returncode == 0, done.stderr[-4000:]
    ranking = json.loads((data / "w_out" / "summary.json").read_text())["ranking"]
    winner = json.loads((data / "w_out" / "trials" / f"K={ranking[0]['K']}__seed=0" / "result.json").read_text())
    assert "# The winner of sweep 'w2'" in (data / "w_out" / "best.yaml").read_text()

    (tmp_path / "params.yaml").write_text((data / "params.yaml").read_text())
    applied = run(tmp_path, "stages.sweep", "--params", "params.yaml", "--apply", str(data / "w_out"))
    assert applied.returncode == 0 and "changed tasks.deblur.model.stages" in applied.stderr, applied.stderr[-2000:]
    resolved = params_from_dict(yaml.safe_load((tmp_path / "params.yaml").read_text()), "deblur")
    assert (resolved.model.stages, resolved.train.steps) == (ranking[0]["K"], 8)

    prepared, degraded = data / "data" / "deblur" / "prepared", data / "data" / "deblur" / "degraded"
    env = {**project_env(tmp_path), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    trained = subprocess.run([sys.executable, "-m", "stages.train", "--params", "params.yaml", "--task", "deblur",
                              "--seed", "0", "--prepared", str(prepared), "--degraded", str(degraded), "--out", "m",
                              "--checkpoint", "m/ckpt.pt", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=400)
    assert trained.returncode == 0, trained.stderr[-3000:]
    model = load_model(tmp_path / "m" / "model.pt", task="deblur")[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics, _ = evaluate_validation(model, datasets.read_split(prepared, degraded, "val"), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert metrics["val_psnr"] == pytest.approx(winner["metrics"]["val_psnr"], abs=1e-3), (metrics, winner["metrics"])
