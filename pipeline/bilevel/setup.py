"""Everything the bilevel training of one configuration reads and builds, in one place.

The ``train`` stage and the sweep's trials both train through :func:`train` (or
:func:`build_training` + :func:`run_training`), so a trial of a sweep and the stage with the same
params train exactly alike. Randomness comes only from ``base.seed`` (the training seed; the data
it reads were drawn from ``base.split_seed``), through named streams of
:func:`pipeline.generators.seeds.derive_seed`: ``init`` (the model's initial weights, drawn from a
forked torch generator, so the global one is left as it was), ``train-kernels`` (the deblurring
kernel bank) and ``train-stream`` (every patch, level and noise draw of the run).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline import datasets, io
from pipeline.bilevel.trainer import DirectTrainer, Trainer, ValSample
from pipeline.config import ModelConfig, Params, to_dict
from pipeline.generators.kernels import sample_kernel
from pipeline.generators.seeds import derive_seed, rng_for
from pipeline.models.factory import build_model
from pipeline.patches import NoiseSpec, PairPatchSampler, PatchSampler, Sampler, TaskPatchSampler
from pipeline.synthesis import task_spec


@dataclass(frozen=True)
class TrainingSetup:
    """What one training run starts from.

    Attributes:
        images: the train split's clean images, ``(C, H, W)`` float32 each, in manifest order.
        val: the validation samples of the training curve (an evenly spread subset of the val split).
        channels: ``C`` (1 grey, 3 colour).
        sampler: the training patches (blurred and noisy for deblurring, rain / haze otherwise;
            crops of real pairs, without a guidance target, for ``prepare.source: pairs``).
        model: the freshly initialised model of ``params.model`` (on the CPU).
        config_key: identifies the configuration and its data: a checkpoint under another key never resumes.
        rng: the sampler's generator (the trainer checkpoints its state).
    """

    images: list[np.ndarray]
    val: list[ValSample]
    channels: int
    sampler: Sampler
    model: nn.Module
    config_key: str
    rng: np.random.Generator


def val_sample(sample: datasets.Sample) -> ValSample:
    """The trainer's view of a sample: batched ``(1, C, H, W)`` tensors, its guidance target and blur."""
    kernel = torch.from_numpy(sample.kernel) if sample.kernel is not None else None
    target = torch.from_numpy(sample.target)[None] if sample.target is not None else None  # a real pair: none
    return ValSample(torch.from_numpy(sample.y)[None], torch.from_numpy(sample.x)[None], target, kernel)


def validation_samples(prepared: Path, degraded: Path, n: int) -> list[ValSample]:
    """At most about ``n`` samples spread evenly over the val split: the training curve stays
    cheap (tune and evaluate use all of them)."""
    rows = datasets.sample_rows(degraded, "val")
    step = max(1, -(-len(rows) // n))
    return [val_sample(s) for s in datasets.iter_split(prepared, degraded, rows[::step])]


def patch_sampler(params: Params, images: list[np.ndarray], rng: np.random.Generator,
                  observed: list[np.ndarray] | None = None) -> PatchSampler | TaskPatchSampler | PairPatchSampler:
    """The training patches of ``params.base.task``, every draw from ``rng``; crops of the real
    pairs ``(images, observed)`` when ``prepare.source`` is ``pairs``."""
    cfg, degrade = params.train, params.degrade
    if params.prepare.source == "pairs":
        if observed is None:
            raise ValueError("prepare.source 'pairs' trains on real observations: pass them")
        return PairPatchSampler(images, observed, cfg.patch_size, rng)
    if params.base.task != "deblur":  # rain and haze patches are degraded by the degrade stage's generators
        return TaskPatchSampler(images, task_spec(params.base.task, degrade), cfg.patch_size, rng)
    # Training always draws from generated kernels: user kernel files are for evaluation.
    krng = rng_for(params.base.seed, "train-kernels")
    kernels = [sample_kernel(krng, degrade.kernels.motion_fraction, degrade.kernels.max_size)
               for _ in range(cfg.train_kernels)]
    noise = NoiseSpec(*degrade.noise.range, degrade.noise.mode, degrade.noise.spread)
    return PatchSampler(images, kernels, noise, cfg.patch_size, degrade.kernels.max_size, rng)


def init_model(cfg: ModelConfig, channels: int, task: str, seed: int) -> nn.Module:
    """The model of ``cfg``, its initial weights drawn from the ``init`` stream of ``seed``.

    A forked CPU generator, seeded as ``torch.manual_seed`` would seed it, so the weights are those
    of a global seeding while the caller's global torch state is left untouched (the model is
    built on the CPU; no CUDA generator is read).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, "init") % 2**31)
        return build_model(cfg, channels, task=task)


def config_key(params: Params, prepared: Path, degraded: Path) -> str:
    """16 hex digits over the params that shape a run and the data it reads (the manifest and the
    sample list): a checkpoint trained on other images never resumes."""
    shaping = {k: to_dict(getattr(params, k)) for k in ("base", "prepare", "degrade", "model", "train")}
    shaping["base"].pop("seeds")  # which other seeds run beside this one shapes nothing of it
    src = json.dumps({**shaping,
                      "data": [io.sha256_file(Path(prepared) / "manifest.csv"),
                               io.sha256_file(Path(degraded) / "samples.csv")]}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def build_training(params: Params, prepared: str | Path, degraded: str | Path) -> TrainingSetup:
    """The data, patch sampler, seeded model and config key of ``params`` on a prepared + degraded split."""
    prepared, degraded = Path(prepared), Path(degraded)
    images = datasets.clean_images(prepared, "train")
    val = validation_samples(prepared, degraded, params.train.val_samples)
    channels = datasets.channels(prepared)
    rng = rng_for(params.base.seed, "train-stream")
    observed = datasets.observed_images(prepared, "train") if params.prepare.source == "pairs" else None
    sampler = patch_sampler(params, images, rng, observed)
    model = init_model(params.model, channels, params.base.task, params.base.seed)
    model.activation_checkpointing = params.train.activation_checkpointing
    return TrainingSetup(images, val, channels, sampler, model, config_key(params, prepared, degraded), rng)


def run_training(setup: TrainingSetup, params: Params, checkpoint: Path | None, device: torch.device,
                 log_fn: Callable[[dict], None] | None = None, progress: bool = False) -> tuple[Trainer, float]:
    """Pre-train, then train ``setup.model`` bilevel (the ``direct_cnn`` control: its one
    phase; resuming from ``checkpoint`` when it matches): ``(trainer, seconds)``, ``seconds`` the wall
    clock of the whole training, a resumed one's earlier processes included (``trainer.spent``); the
    trained model stays on ``device``."""
    kind = DirectTrainer if params.model.guidance == "direct" else Trainer  # the direct_cnn control
    trainer = kind(setup.model, setup.sampler, params.train, device, setup.rng, checkpoint, setup.config_key,
                   setup.val, log_fn, progress=progress)
    trainer.run()
    return trainer, trainer.spent["seconds"]


def train(params: Params, prepared: Path, degraded: Path, checkpoint: Path | None, device: torch.device,
          log_fn: Callable[[dict], None] | None = None, progress: bool = False) -> tuple[Trainer, nn.Module, int, float]:
    """Train as the ``train`` stage does: ``(trainer, model, channels, seconds)``. No tracker, no
    output files: the caller (a sweep trial) decides what to keep."""
    setup = build_training(params, prepared, degraded)
    trainer, seconds = run_training(setup, params, checkpoint, device, log_fn, progress)
    return trainer, setup.model, setup.channels, seconds
