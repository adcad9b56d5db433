"""The MLflow adapter's sweep runs, read back from a real SQLite store: the parent run opened,
re-opened on a re-launch and closed; a finished and a failed child run with their params,
curves (bilevel steps after the pre-training ones) and final metrics; a stage's experiment tagged
for MLflow 3's model-development view, and the link to its runs table. A run left RUNNING by a
killed stage: tests/hostile/test_kills.py."""
from __future__ import annotations

import dataclasses

import pytest
from mlflow import MlflowClient

from stages.tracking import close_sweep_run, log_trial_run, open_sweep_run, runs_url, scratch_run, stage_run


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # relative: the adapter makes it absolute
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_sweep_parent_with_two_children_reopened_on_a_relaunch(tmp_path, store):
    sweep = open_sweep_run(tmp_path / "out" / "sweep_run.json", "t2", "deblur", {"sweep.n_trials": 2})
    assert sweep.uri == store
    history = [{"phase": "pretrain", "step": 2, "loss": 0.5}, {"phase": "bilevel", "step": 1, "loss": 0.25,
                                                                "val_psnr": float("nan")}]
    done = log_trial_run(sweep, "a", {"train.lr": 0.001}, history, {"val_psnr": 20.0, "val_psnr@3": 21.0}, "FINISHED",
                         {"attempts": "1"}, pretrain_steps=4)
    failed = log_trial_run(sweep, "b", {"train.lr": 0.01}, [], {}, "FAILED", {"error": "boom"})
    (tmp_path / "out" / "figures").mkdir()
    (tmp_path / "out" / "figures" / "f.png").write_bytes(b"png")
    (tmp_path / "out" / "results.csv").write_text("trial_id\na\n")
    close_sweep_run(sweep, {"n_failed": 1}, [tmp_path / "out" / "results.csv", tmp_path / "out" / "figures"], failed=True)

    client = MlflowClient(store)
    parent = client.get_run(sweep.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.params == {"sweep.n_trials": "2"}
    assert parent.data.metrics == {"n_failed": 1.0} and parent.data.tags["sweep"] == "t2"
    assert sorted(a.path for a in client.list_artifacts(sweep.parent_run_id)) == ["figures", "results.csv"]
    child = client.get_run(done)
    assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == sweep.parent_run_id
    assert child.data.params == {"train.lr": "0.001"}
    assert child.data.metrics == {"pretrain/loss": 0.5, "bilevel/loss": 0.25, "val_psnr": 20.0, "val_psnr/noise_3": 21.0}
    assert [m.step for m in client.get_metric_history(done, "bilevel/loss")] == [4 + 1]
    assert client.get_run(failed).info.status == "FAILED" and client.get_run(failed).data.tags["error"] == "boom"

    again = open_sweep_run(tmp_path / "out" / "sweep_run.json", "t2", "deblur", {"sweep.n_trials": 2})
    assert again == sweep and client.get_run(sweep.parent_run_id).info.status == "RUNNING"
    other = open_sweep_run(tmp_path / "out" / "sweep_run.json", "renamed", "deblur", {})
    assert other.parent_run_id != sweep.parent_run_id  # another sweep in the same folder: a new parent


def test_a_scratch_run_keeps_its_store_in_its_folder(tmp_path):
    with scratch_run(tmp_path / "work", "bench") as tracker:
        tracker.log_metrics({"loss": 1.5, "skipped": float("nan")}, step=3)
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.data.metrics == {"loss": 1.5} and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tmp_path / "work" / "artifacts").as_uri())


def test_a_stage_run_tags_its_experiment_for_model_development_and_logs_where_its_runs_are(store, caplog, monkeypatch):
    import logging

    # absolute: MLflow caches a store per URI, and a relative one opened earlier in another folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    from mlflow.entities import ViewType

    from pipeline.config import Params
    client = MlflowClient(store)
    old = client.create_experiment("hyperguide-derain")  # an experiment of an older version: no kind tag
    with caplog.at_level(logging.INFO, logger="stages.tracking"):
        with stage_run("evaluate", Params()):
            pass
    exps = {e.name: e for e in client.search_experiments(view_type=ViewType.ALL)}
    deblur = exps["hyperguide-deblur"]
    assert deblur.tags["mlflow.experimentKind"] == "custom_model_development"
    url = f"http://127.0.0.1:5000/#/experiments/{deblur.experiment_id}/runs?workflowType=machine_learning"
    assert url in caplog.text
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    with stage_run("evaluate", Params(base=dataclasses.replace(Params().base, task="derain"))):
        pass
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert runs_url("7", "http://tracking:5000/") == "http://tracking:5000/#/experiments/7/runs?workflowType=machine_learning"
