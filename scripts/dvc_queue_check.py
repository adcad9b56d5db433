"""Check the `dvc exp run --queue` + `dvc queue start` path the README documents, on a copy.

    python scripts/dvc_queue_check.py [--keep DIR] [--task derain] [--lrs 0.0002,0.0006]

Copies the project (tests/project_copy.py) with profiles/test.yaml merged and one task, runs
`dvc repro`, queues one experiment per learning rate (`-S tasks.<task>.train.lr=...`), runs the
queue with `dvc queue start -j 1`, waits for it, and reads `dvc exp show --json`. Prints
``key=value`` lines (per experiment: its name, status and the learned PSNR of its headline), and
last ``queue_ok=1`` when every queued experiment finished with its own params and metrics
(``queue_ok=0`` and exit 1 otherwise). Minutes on 2 cores (one training per experiment).
"""
from __future__ import annotations

import argparse
import json
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


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def experiments(show: list[dict]) -> list[dict]:
    """The experiments of ``dvc exp show --json`` (every commit's ``experiments``), flattened to
    ``{name, error, params, metrics}`` (a finished experiment has no status there: `dvc queue
    status` says Success)."""
    out = []
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                out.append({"name": rev.get("name") or data.get("name"), "error": rev.get("error"),
                            "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                            "metrics": data.get("metrics") or {}})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", help="copy the project here (kept) instead of a temporary folder")
    p.add_argument("--task", default="derain")
    p.add_argument("--lrs", default="0.0002,0.0006", help="one queued experiment per learning rate")
    args = p.parse_args()
    lrs = [float(v) for v in args.lrs.split(",")]
    base = merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                 yaml.safe_load((ROOT / "profiles" / "test.yaml").read_text()))
    base["tasks"]["run"] = [args.task]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hyperguide-queue-"))
    dst = copy_project(work / "project", yaml.safe_dump(base, sort_keys=False))
    env = project_env(dst)
    t0 = time.perf_counter()
    run(["dvc", "repro"], dst, env)
    run(["git", "add", "-A"], dst, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], dst, env)
    print(f"baseline_seconds={time.perf_counter() - t0:.1f}")
    for lr in lrs:
        run(["dvc", "exp", "run", "--queue", "-S", f"tasks.{args.task}.train.lr={lr}"], dst, env)
    print(f"queued={len(lrs)}")
    t1 = time.perf_counter()
    run(["dvc", "queue", "start", "-j", "1"], dst, env)
    while True:  # the queue runs in DVC's own worker; `dvc queue status` lists Queued/Running until done
        status = run(["dvc", "queue", "status"], dst, env)
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(10)
    print(f"queue_seconds={time.perf_counter() - t1:.1f}")
    print("queue_status=" + " | ".join(line.strip() for line in status.splitlines() if line.strip()))
    show = json.loads(run(["dvc", "exp", "show", "--json"], dst, env))
    found = experiments(show)
    succeeded = sum(line.split()[-1] == "Success" for line in status.splitlines() if line.strip())
    ok = len(found) == len(lrs) == succeeded
    seen = set()
    for exp in found:
        lr = exp["params"].get("tasks", {}).get(args.task, {}).get("train", {}).get("lr")
        headline = exp["metrics"].get(f"results/{args.task}/headline.json", {}).get("data", {})
        learned = headline.get(args.task, {}).get("learned")  # headline.json nests under the task's name
        print(f"experiment_{exp['name']}=error:{exp['error']},lr:{lr},learned_psnr:{learned}")
        ok &= exp["error"] is None and lr in lrs and learned is not None
        seen.add(lr)
    ok &= seen == set(lrs)
    print(f"queue_ok={int(ok)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
