"""A sweep on a real multi-node Ray cluster that loses a node mid-sweep, tracked by a real MLflow
server over HTTP (marked ``cluster``; .ci/run runs it).

Started and stopped here: a head with no CPUs and two worker nodes of 1 CPU, each its own raylet
on 127.0.0.1 (``tests/ray_cluster.py``), Ray's token authentication on (a token file of the
test's own); ``mlflow server`` on 127.0.0.1 with a SQLite store and a local artifact root. The
sweep runs as users run it, through ``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI=http://...``: two
trials, one per worker node; once both have checkpointed, worker node 0 is killed. With retries the
lost trial is re-scheduled on the surviving node, resumes from its checkpoint and every trial and
MLflow run finishes; without (``max_retries: 0``) the lost trial is a failure the command reports.
No process of the test outlives it.
"""
from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, deblur_split, project_env

TRIALS = ("strategy=alternating__seed=0", "strategy=joint__seed=0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen | None) -> None:
    """End ``proc`` and its process group (SIGTERM, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def our_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (this test's temporary folder)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmd and state != "Z":
                found.append(cmd[:200])
    return found


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return deblur_split(tmp_path_factory.mktemp("cluster"))


@pytest.mark.cluster
@pytest.mark.parametrize("retries", [2, 0])
def test_a_node_lost_mid_sweep_costs_no_trial_with_retries_and_is_reported_without(split, tmp_path, retries):
    root = tmp_path
    token = root / "ray_token"
    token.write_text(secrets.token_hex(32))
    ray_tmp = Path(tempfile.mkdtemp(prefix="hg-ray-"))  # short: Ray's socket paths must stay under 107 bytes
    env = {**project_env(ROOT), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp),
           # one machine: every node and the driver on the loopback (a real cluster leaves this unset)
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    sweep_file = root / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": f"lost{retries}", "seeds": [0], "resources": {"num_cpus": 1}, "max_retries": retries,
        # long enough that both trials checkpoint and still run when the node goes
        "overrides": {"train": {"pretrain_steps": 10, "steps": 200, "checkpoint_every": 10, "log_every": 50}},
        "axes": {"strategy": ["alternating", "joint"]}}))
    port = free_port()
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["mlflow"] = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        procs["cluster"] = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "ray_cluster.py"), "--workers", "2", "--cpus", "1"], cwd=root,
            env={**env, "TMPDIR": str(ray_tmp)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True)
        address = procs["cluster"].stdout.readline().split()
        assert address[:1] == ["ADDRESS"] and address[1].startswith("127.0.0.1:"), address
        wait(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120, "the MLflow server")

        # the token is required: a client without it is refused
        bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(root), "RAY_ADDRESS": address[1]}
        refused = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print('ACCEPTED')"], env=bare,
                                 capture_output=True, text=True, timeout=120)
        assert "ACCEPTED" not in refused.stdout

        out = root / "out"
        procs["sweep"] = subprocess.Popen(
            [sys.executable, "-m", "stages.sweep", "--params", str(split / "params.yaml"), "--sweep", str(sweep_file),
             "--prepared", str(split / "data" / "deblur" / "prepared"), "--degraded",
             str(split / "data" / "deblur" / "degraded"), "--out", str(out), "--quiet"], cwd=root,
            env={**env, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address[1],
                 "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        ckpts = [out / "trials" / t / "checkpoint.pt" for t in TRIALS]
        wait(lambda: all(c.exists() for c in ckpts) or procs["sweep"].poll() is not None, 300, "both checkpoints")
        assert procs["sweep"].poll() is None, "the sweep ended before the node could be lost"
        procs["cluster"].stdin.write("remove 0\n")
        procs["cluster"].stdin.flush()
        assert procs["cluster"].stdout.readline().strip() == "REMOVED 0"
        log, _ = procs["sweep"].communicate(timeout=600)
    finally:
        for name in ("sweep", "cluster", "mlflow"):
            if name == "cluster" and name in procs and procs[name].poll() is None:
                try:
                    procs[name].stdin.write("shutdown\n")
                    procs[name].stdin.flush()
                    procs[name].wait(timeout=60)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            stop(procs.get(name))
    assert wait(lambda: not (our_processes(str(root)) + our_processes(str(ray_tmp))), 30,
                "the test's processes to end", poll=0.5) is True
    shutil.rmtree(ray_tmp, ignore_errors=True)

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["trial_id"] for r in rows) == sorted(TRIALS)  # no trial missing, none twice
    results = {t: json.loads(p.read_text()) for t in TRIALS if (p := out / "trials" / t / "result.json").exists()}
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")  # the server's own store (the server is gone)
    exp = client.get_experiment_by_name("hyperguide-deblur")
    runs = client.search_runs([exp.experiment_id], "tags.dvc_stage = 'sweep'")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(c.info.run_name for c in children) == sorted(TRIALS)
    if retries:
        assert procs["sweep"].returncode == 0, log[-4000:]
        assert all(r["status"] == "finished" for r in rows)
        lost = [t for t, r in results.items() if r["attempts"] == 2]
        assert len(lost) == 1 and results[lost[0]]["resumed_from"] is not None  # re-run from its checkpoint
        assert all(c.info.status == "FINISHED" for c in children) and len(runs) == 3
    else:  # the control: without retries the lost trial fails, and the command says so
        assert procs["sweep"].returncode == 1, log[-4000:]
        assert sorted(r["status"] for r in rows) == ["failed", "finished"]
        assert "1 trial(s) failed" in log
        assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
