"""The profiles (``profiles/*.yaml``: overrides merged onto params.yaml) resolve and validate for
every task; the GPU profile's model is the paper's scale and trains, at tiny size, on the CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from pipeline.bilevel.trainer import Trainer
from pipeline.config import TASKS, merge, params_from_dict
from pipeline.generators.kernels import sample_kernel
from pipeline.models.factory import build_model
from pipeline.patches import NoiseSpec, PatchSampler

PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


def resolved(profile, task):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return params_from_dict(merge(base, yaml.safe_load(profile.read_text())), task)


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_resolves_for_every_task(profile):
    for task in TASKS:
        assert resolved(profile, task).base.task == task


def test_the_gpu_profile_is_the_papers_scale_and_one_step_of_it_trains_on_the_cpu(tmp_path):
    assert (ROOT / "profiles" / "gpu.yaml") in PROFILES
    for task in TASKS:
        p = resolved(ROOT / "profiles" / "gpu.yaml", task)
        assert (p.model.stages, p.model.denoiser_width, len(p.model.denoiser_dilations)) == (8, 64, 17)
        assert p.train.amp == "auto" and p.train.patch_size >= 128 and p.train.steps >= 5000
        model = build_model(p.model, 1 if task == "deblur" else 3, task=task)
        convs = [m for m in model.denoiser.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 17 and convs[0].out_channels == 64
    # one pre-training and one bilevel step at tiny size (patches of 32, batch 1), bf16 as on a GPU
    p = resolved(ROOT / "profiles" / "gpu.yaml", "deblur")
    cfg = dataclasses.replace(p.train, pretrain_steps=1, steps=1, batch_size=1, patch_size=32, checkpoint_every=1,
                              log_every=1, amp="bf16")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    kernels = [sample_kernel(np.random.default_rng(i), max_size=9) for i in range(2)]
    sampler = PatchSampler([rng.random((1, 48, 48)).astype(np.float32)], kernels, NoiseSpec(1, 7), 32, 9, rng)
    trainer = Trainer(build_model(p.model, 1), sampler, cfg, torch.device("cpu"), rng, tmp_path / "c.pt", "gpu",
                      progress=False)
    history = trainer.run()
    assert [r["phase"] for r in history] == ["pretrain", "bilevel"]
    assert all(np.isfinite(v) for r in history for k, v in r.items() if "loss" in k)
