"""The training batches of each step: drawn in the training process (the default), or ahead of
time by worker processes so that a GPU does not wait for the CPU's patch synthesis.

In-process (``train.data_workers: 0``) every batch comes from the run's one sampler stream, as it
always has. With ``N > 0`` worker processes, batch ``i`` of a phase is drawn from a generator of
its own, seeded by ``(run seed, phase, i)``: the same batches whatever ``N`` is, in the same order,
and a resumed run draws the batches it has not trained on yet (so the resume stays bit for bit).
The two modes draw different, equally distributed, batches.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from pipeline.generators import noise_maps
from pipeline.generators.seeds import derive_seed
from pipeline.patches import Sampler


@dataclass(frozen=True)
class BatchSpec:
    """What one training step reads: ``batch_size`` patches; in pre-training clean patches with
    noise of up to ``sigma_max`` ([0, 1] units) for the denoiser and, when the proxy is learned
    (``with_proxy``), a degraded batch for its inner problem; in the bilevel phase a degraded batch."""

    batch_size: int
    sigma_max: float
    with_proxy: bool


def noisy_for_pretraining(clean: torch.Tensor, rng: np.random.Generator, sigma_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``clean (B, C, P, P)`` -> noisy patches and their maps ``(B, 1, P, P)``.

    Levels uniform in ``[0, sigma_max]``; half the maps spatially varying, so the prior learns to
    follow a map, not only a scalar.
    """
    b, _, h, w = clean.shape
    maps = []
    for _ in range(b):
        level = float(rng.uniform(0.0, sigma_max))
        if rng.uniform() < 0.5:
            maps.append(noise_maps.constant_map((h, w), level))
        else:
            maps.append(noise_maps.smooth_map(rng, (h, w), level, spread=0.8))
    sigma = torch.from_numpy(np.stack(maps))
    noise = torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32))
    return clean + sigma * noise, sigma


def draw_batch(sampler: Sampler, rng: np.random.Generator, phase: str,
               spec: BatchSpec) -> dict[str, torch.Tensor]:
    """One step's batch, every draw from ``rng`` (``sampler.rng`` is pointed at it). Pre-training:
    ``clean, noisy, sigma`` and, with the proxy, ``y, target`` of a degraded batch; bilevel (and
    ``direct``, the direct CNN's one phase): the sampler's degraded batch (``x, y, target`` and,
    for deblurring, ``kernel``)."""
    sampler.rng = rng
    if phase in ("bilevel", "direct"):
        return sampler.degraded_batch(spec.batch_size)
    clean = sampler.clean_batch(spec.batch_size)
    noisy, sigma = noisy_for_pretraining(clean, rng, spec.sigma_max)
    batch = {"clean": clean, "noisy": noisy, "sigma": sigma}
    if spec.with_proxy:
        degraded = sampler.degraded_batch(spec.batch_size)
        batch.update(y=degraded["y"], target=degraded["target"])
    return batch


def batch_seed(seed: int, phase: str, index: int) -> int:
    """The seed of batch ``index`` of ``phase`` in worker mode."""
    return derive_seed(seed, f"batch-{phase}-{index}")


# A worker process's copy of the sampler, set once by the pool's initializer: the pool API hands
# work to functions, so the per-process state lives here (never in the training process).
_WORKER_SAMPLER: Sampler | None = None


def _init_worker(sampler: Sampler) -> None:
    global _WORKER_SAMPLER
    torch.set_num_threads(1)  # one core per worker: the workers, not their threads, are the parallelism
    _WORKER_SAMPLER = sampler


def _draw_in_worker(seed: int, phase: str, index: int, spec: BatchSpec) -> dict[str, torch.Tensor]:
    assert _WORKER_SAMPLER is not None
    return draw_batch(_WORKER_SAMPLER, np.random.default_rng(batch_seed(seed, phase, index)), phase, spec)


@contextlib.contextmanager
def worker_pool(sampler: Sampler, workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` spawned processes, each with a copy of ``sampler`` (its data, not its stream),
    for :class:`Prefetcher`; shut down on exit, queued batches cancelled."""
    rng, sampler.rng = sampler.rng, None  # the workers get the data, not the run's stream
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(sampler,))
    finally:
        sampler.rng = rng
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Prefetcher:
    """Batches ``start, start + 1, ... total - 1`` of one phase, drawn by the processes of
    ``pool`` (:func:`worker_pool`), up to ``depth`` ahead of the training loop; ``next()``
    returns the batch of the next step. Use as a context manager: batches not taken are
    cancelled on exit."""

    def __init__(self, pool: ProcessPoolExecutor, seed: int, phase: str, spec: BatchSpec, start: int, total: int,
                 depth: int):
        self.pool, self.seed, self.phase, self.spec = pool, seed, phase, spec
        self.next_index, self.total, self.depth = start, total, max(1, depth)
        self.queue: deque[Future] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self.queue) < self.depth and self.next_index < self.total:
            self.queue.append(self.pool.submit(_draw_in_worker, self.seed, self.phase, self.next_index, self.spec))
            self.next_index += 1

    def next(self) -> dict[str, torch.Tensor]:
        if not self.queue:
            raise IndexError(f"{self.phase}: no batch left (the phase has {self.total} steps)")
        batch = self.queue.popleft().result()  # a worker's exception is raised here
        self._fill()
        return batch

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        for future in self.queue:
            future.cancel()
