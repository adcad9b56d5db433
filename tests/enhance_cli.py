"""The enhance command on a tiny untrained model, shared by tests/stages/test_enhance.py and the
hostile-input tests in tests/hostile/: its assets, and ways to run it (in process or as a command)."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline import io
from pipeline.checkpoint import save_model
from pipeline.config import ModelConfig
from pipeline.models.factory import build_model
from project_copy import ROOT, project_env
from stages import enhance
from stages.common import run_main

TINY = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)


def tiny_checkpoint(path, task="deblur"):
    torch.manual_seed(0)
    model = build_model(TINY, 1, task=task).eval()
    save_model(path, model, TINY, 1, task, pretrained_denoiser=model.denoiser.state_dict())
    return model


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny untrained model, a kernel, and a folder: a 16-bit colour PNG, an 8-bit grey JPEG in a
    subfolder, a 16-bit grey TIFF."""
    root = tmp_path_factory.mktemp("enhance")
    rng = np.random.default_rng(7)
    tiny_checkpoint(root / "model.pt")
    k = rng.random((5, 5)).astype(np.float32)
    np.save(root / "kernel.npy", k / k.sum())
    images = root / "in"
    io.write_image(images / "colour.png", rng.random((40, 44, 3)), bits=16)
    io.write_image(images / "sub" / "grey.jpg", rng.random((36, 30)))
    io.write_image(images / "grey16.tif", rng.random((30, 34)), bits=16)
    return root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.enhance", "--quiet", *args], cwd=ROOT, env=project_env(ROOT),
                          capture_output=True, text=True, timeout=300)


def run_in_process(caplog, *args: str) -> int:
    """``run_main`` on ``stages.enhance.main``: the exit code (0 when it returns); messages in caplog."""
    caplog.set_level(logging.INFO, logger="hyperguide")
    try:
        run_main(lambda: enhance.main(["--quiet", *args]))
    except SystemExit as exc:
        return int(exc.code)
    return 0


def no_temporaries(folder) -> bool:
    return not [p for p in folder.rglob(".tmp-*")] if folder.exists() else True


def write_tiff(path, samples: np.ndarray) -> None:
    """``(H, W, C)`` as a TIFF; the last sample of 2 or 4 marked as (unassociated) alpha."""
    import tifffile

    c = samples.shape[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, samples, photometric="rgb" if c >= 3 else "minisblack",
                     extrasamples=["unassalpha"] if c in (2, 4) else None)
