"""What every stage does at its edge: interrupted cleanly, and never outliving ``dvc repro``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, project_env

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
