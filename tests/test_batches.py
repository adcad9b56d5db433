"""Training batches drawn by worker processes: the same batches whatever the number of workers,
a resumed run bit for bit the uninterrupted one, and the in-process default untouched."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import Interrupted, interrupt_at

from pipeline.batches import BatchSpec, Prefetcher, draw_batch, worker_pool
from pipeline.bilevel.trainer import Trainer
from pipeline.config import ModelConfig, TrainConfig
from pipeline.generators.kernels import sample_kernel
from pipeline.models.factory import build_model
from pipeline.patches import NoiseSpec, PatchSampler

MODEL = ModelConfig(stages=2, denoiser_width=4, denoiser_dilations=(1, 2, 1), proxy_width=4)


def _sampler(seed: int = 0) -> PatchSampler:
    images = [np.random.default_rng(1).random((1, 40, 44)).astype(np.float32)]
    kernels = [sample_kernel(np.random.default_rng(i), max_size=9) for i in range(4)]
    return PatchSampler(images, kernels, NoiseSpec(1, 7), 32, 9, np.random.default_rng(seed))


def _trainer(tmp_path, workers: int, log_fn=None) -> Trainer:
    cfg = TrainConfig(pretrain_steps=4, steps=6, batch_size=2, patch_size=32, checkpoint_every=2, log_every=2,
                      train_kernels=4, data_workers=workers)
    torch.manual_seed(0)
    sampler = _sampler()
    return Trainer(build_model(MODEL, 1), sampler, cfg, torch.device("cpu"), sampler.rng, tmp_path / "ckpt.pt", "key",
                   log_fn=log_fn, progress=False)


def test_prefetched_batches_are_the_same_for_any_number_of_workers_and_start_where_asked():
    spec = BatchSpec(batch_size=2, sigma_max=0.1, with_proxy=True)
    got = {}
    for workers in (1, 2):
        with worker_pool(_sampler(), workers) as pool, Prefetcher(pool, 7, "pretrain", spec, start=1, total=4,
                                                                   depth=2 * workers) as p:
            got[workers] = [p.next() for _ in range(3)]
            with pytest.raises(IndexError, match="no batch left"):
                p.next()
    for a, b in zip(got[1], got[2]):
        assert set(a) == {"clean", "noisy", "sigma", "y", "target"} and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(got[1][0]["clean"], got[1][1]["clean"])  # each batch its own draws
    # in-process: the run's one stream, as before (a fresh sampler with the same seed draws the same)
    first = draw_batch(_sampler(3), _sampler(3).rng, "bilevel", spec)
    again = _sampler(3)
    assert torch.equal(first["y"], draw_batch(again, again.rng, "bilevel", spec)["y"])


def test_training_with_workers_resumes_bit_for_bit_and_matches_any_worker_count(tmp_path):
    reference = _trainer(tmp_path / "one", workers=1)
    reference.run()

    with pytest.raises(Interrupted):
        _trainer(tmp_path / "two", workers=2, log_fn=interrupt_at("bilevel", 4)).run()
    resumed = _trainer(tmp_path / "two", workers=2)
    resumed.run()
    assert resumed.resumed_from == 2
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
    in_process = _trainer(tmp_path / "zero", workers=0)
    in_process.run()  # another stream: other weights, the same shapes
    assert not torch.equal(next(iter(in_process.model.state_dict().values())),
                           next(iter(reference.model.state_dict().values())))


def test_data_workers_are_validated():
    from pipeline.config import ConfigError
    with pytest.raises(ConfigError, match="train.data_workers"):
        dataclasses.replace(TrainConfig(), data_workers=-1)
