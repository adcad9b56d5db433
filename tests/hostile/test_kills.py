"""Hostile kills: `kill -9` of `dvc repro` while a stage runs (the stage exits with it), SIGTERM (an
interruption, exit code 130), a stage killed inside its MLflow run (the next run of that stage ends
the orphan as KILLED and links to it).

Other kill cases, inside tests that need their own setup:
- tests/bilevel/test_bilevel.py::test_interrupted_training_resumes_bit_for_bit
- tests/bilevel/test_setup.py::test_training_resumes_from_its_checkpoint_to_the_same_model
- tests/stages/test_optuna_adapter.py::test_killed_search_resumes_keeps_trials_and_respects_budget
- tests/stages/test_sweep_command.py::test_two_trials_one_killed_once_then_a_relaunch_that_recomputes_nothing
- tests/stages/test_sweep_command.py::test_a_trial_dead_past_its_retries_is_listed_and_the_command_exits_1
- tests/stages/test_benchmark_pairs.py::test_a_crashed_run_resumes_from_its_journal_and_ends_as_an_uninterrupted_one
- tests/stages/test_benchmark.py::test_a_crashed_run_resumes_with_its_oracle_scores_and_mismatch_rows
- tests/test_evaluation.py::test_a_resumed_evaluation_runs_only_the_samples_not_done_and_equals_an_uninterrupted_one
- tests/test_io.py::test_jsonl_appends_and_a_line_cut_by_a_kill_is_dropped
- tests/test_io.py::test_atomic_path_failure_keeps_existing_target
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from conftest import ROOT, project_env
from pipeline.config import Params
from stages.tracking import stage_run

# A stand-in for a long stage body (a tune or a train) run through the real run_main.
STAGE = ("from stages.common import run_main\nimport time\n"
         "def main():\n    open('started', 'w').close()\n    time.sleep(120)\nrun_main(main)\n")
# A stand-in for `dvc repro`: starts the stage as its direct child (as DVC does), then waits.
PARENT = ("import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
          "print(p.pid, flush=True)\ntime.sleep(120)\n")


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, is not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_stage_under_dvc_exits_when_dvc_is_killed(tmp_path):
    env = {**project_env(ROOT), "DVC_STAGE": "tune@deblur", "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STAGE], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: (tmp_path / "started").exists(), 60)
        parent.send_signal(signal.SIGKILL)  # as `kill -9` of dvc repro
        parent.wait()
        assert wait_for(lambda: not alive(child), 15), "the stage outlived its parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_sigterm_ends_a_stage_as_an_interruption(tmp_path):
    env = {**project_env(ROOT), "PYTHONPATH": str(ROOT)}
    env.pop("DVC_STAGE", None)
    proc = subprocess.Popen([sys.executable, "-c", STAGE], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (tmp_path / "started").exists(), 60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted (signal SIGTERM)" in err, err[-2000:]


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # relative: the adapter makes it absolute
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# A stage body that dies hard inside its run (``kill -9``: no finally, no end_run), or lives on.
DIES = ("import os, signal\nfrom stages.tracking import stage_run\nfrom pipeline.config import Params\n"
        "with stage_run('train', Params()) as t:\n    print(t.run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.{sig})\n    import time; time.sleep(60)\n")


def start_stage(tmp_path, sig: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-c", DIES.format(sig=sig)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def test_a_run_left_running_by_a_killed_stage_is_ended_by_the_next(tmp_path, store):
    stopped, running = start_stage(tmp_path, "SIGSTOP")  # stopped, not dead: its run is not an orphan
    killed, orphan = start_stage(tmp_path, "SIGKILL")
    killed.wait(timeout=60)
    try:
        client = MlflowClient(store)
        assert client.get_run(orphan).info.status == "RUNNING"
        with stage_run("train", Params()) as tracker:
            pass
        assert client.get_run(orphan).info.status == "KILLED"
        assert client.get_run(tracker.run_id).data.tags["resumes_run"] == orphan
        assert client.get_run(running).info.status == "RUNNING"
        with stage_run("evaluate", Params()) as other:  # another stage's run: no orphan of its own
            pass
        assert "resumes_run" not in client.get_run(other.run_id).data.tags
    finally:
        stopped.kill()
        stopped.wait()
