"""A stage run as a process in a folder of its own, reading the params.yaml written there (the test
profile with some values overridden)."""
from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import ROOT, project_env, profile_dict


def run_stage(cwd, stage, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def write_params(path, **overrides):
    params = profile_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params))
    return path
