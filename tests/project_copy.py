"""Copy the project into a fresh git repository (tests and benchmarks run the real DVC there)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOT_OUTPUTS = {".venv", ".git", "data", "models", "results", "checkpoints", "reports", "mlflow.db", "mlartifacts", "tuned",
                "mlruns", ".pytest_cache", "optuna.db", "dvc.lock"}


def ignore(directory: str, names: list[str]) -> set[str]:
    """Skip the root's outputs and stores (not ``pipeline/models``!), DVC's cache, bytecode."""
    here = Path(directory).resolve()
    skip = {"__pycache__"} | (ROOT_OUTPUTS if here == ROOT else set()) | ({"cache", "tmp"} if here == ROOT / ".dvc" else set())
    return {n for n in names if n in skip}


def project_env(root: Path) -> dict[str, str]:
    """Environment for running stages in ``root``: this interpreter first on PATH, MLflow in ``root``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(root)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def copy_project(dst: Path, params_text: str | None = None) -> Path:
    """A copy of the project at ``dst`` (a new git repo, one commit), optionally with other params."""
    shutil.copytree(ROOT, dst, ignore=ignore)
    if params_text is not None:
        (dst / "params.yaml").write_text(params_text)
    env = project_env(dst)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env, capture_output=True)
    return dst
