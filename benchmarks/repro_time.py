"""Time a full `dvc repro` in a fresh copy of the project, then a no-op re-run.

    python benchmarks/repro_time.py [--profile profiles/test.yaml] [--keep DIR]

Prints ``key=value`` lines: per-stage seconds (from DVC's output order and wall clock;
``stage_seconds_train_derain_0`` for ``train@derain-0``), per-task sums, the no-op re-run, the
CPU's model (``cpu_model``), and last the headline ``repro_seconds`` (every task of ``tasks.run``; the target is 40 min on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from pipeline.config import merge  # noqa: E402
from project_copy import copy_project, project_env  # noqa: E402

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), spaces as ``_``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "_".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return "_".join(platform.processor().split()) or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", help="overrides merged onto params.yaml (e.g. profiles/test.yaml)")
    p.add_argument("--keep", help="copy the project here instead of a temporary folder (kept)")
    args = p.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hyperguide-bench-"))
    params = None
    if args.profile:
        merged = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(Path(args.profile).read_text()))
        params = yaml.safe_dump(merged, sort_keys=False)
    dst = copy_project(work / "project", params)
    env = project_env(dst)

    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=dst, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage, started, stages = None, t0, {}
    for line in proc.stdout:
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if stage:
                stages[stage] = now - started
            stage, started = line.split("'")[1], now
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed in {dst}")
    total = time.perf_counter() - t0
    if stage:
        stages[stage] = time.perf_counter() - started
    t1 = time.perf_counter()
    noop = subprocess.run(["dvc", "repro"], cwd=dst, env=env, capture_output=True, text=True)
    noop_seconds = time.perf_counter() - t1
    tasks: dict[str, float] = {}
    for name, seconds in stages.items():
        print(f"stage_seconds_{name.replace('@', '_').replace('-', '_')}={seconds:.1f}")
        if "@" in name:  # foreach / matrix stages: <stage>@<task>[-<seed>[-<control>]]
            task = name.split("@")[1].split("-")[0]
            tasks[task] = tasks.get(task, 0.0) + seconds
    for task, seconds in tasks.items():
        print(f"task_seconds_{task}={seconds:.1f}")
    print(f"noop_ran_stages={noop.stdout.count('Running stage')}")
    print(f"noop_repro_seconds={noop_seconds:.2f}")
    print(f"cpu_count={os.cpu_count()}")
    print(f"cpu_model={cpu_model()}")  # timings (and float rounding, hence the models' bits) depend on it
    print(f"repro_seconds={total:.1f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
