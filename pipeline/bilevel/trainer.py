"""Training: denoiser pre-training (the prior), then the bilevel phase; checkpointed, resumable.

The trainer knows nothing of files beyond one checkpoint path nor of trackers: progress goes to
a ``log(row)`` callback. A checkpoint holds everything needed to continue bit-for-bit (weights,
optimiser states, the sampler's random state, the history) and the time spent to reach it,
saved atomically, loaded with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.batches import BatchSpec, Prefetcher, draw_batch, worker_pool
from pipeline.bilevel.parallel import mean_value, shard, world
from pipeline.bilevel.strategies import apply_step, make_strategy, set_lr_scale, strategy_options
from pipeline.config import TrainConfig
from pipeline.patches import Sampler
from pipeline.device import amp_dtype, autocast, grad_scaler, to_device
from pipeline.io import atomic_path
from pipeline.metrics import psnr
from pipeline.models.task_models import Observation
from pipeline.models.unfolded import UnfoldedHQS
from pipeline.physics.blur import BlurPhysics

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2  # 2: with the time spent (``spent``); a format-1 checkpoint starts afresh


class TrainingDiverged(RuntimeError):
    """Losses stayed non-finite; the last good checkpoint is kept."""


@dataclass
class ValSample:
    """A fixed validation observation: ``y, x (1, C, H, W)``, ``target (1, 1, H, W)`` (the true
    guidance map: noise level, rain density or transmission correction; None for a real pair), ``kernel (k, k)``
    (deblurring; ``None`` for rain and haze)."""

    y: torch.Tensor
    x: torch.Tensor
    target: torch.Tensor | None
    kernel: torch.Tensor | None = None


def bind_physics(y: torch.Tensor, kernel: torch.Tensor | None) -> BlurPhysics | Observation:
    """The forward model the unfolded model takes: the blur bound to ``y (B, C, H, W)`` and
    ``kernel (B, k, k)`` or ``(k, k)``, or, for the blind tasks (``kernel`` None), ``y`` alone."""
    return BlurPhysics(y, kernel) if kernel is not None else Observation(y)


class Trainer:
    """Pre-train ``model.denoiser`` on denoising, then train the unfolded model bilevel.

    Args:
        model: the unfolded model (its denoiser is the one pre-trained): the deblurring one or a
            rain / haze model (:mod:`pipeline.models.task_models`).
        sampler: training patches (``clean_batch``, ``degraded_batch``: a batch with ``kernel``
            is a blur, one without it a blind task's).
        cfg: the ``train`` config.
        device: where to compute.
        rng: the sampler's generator (saved in checkpoints so a resumed run continues the same stream).
        checkpoint: file to save to / resume from (``None``: no checkpoints).
        config_key: identifies the run's configuration; a checkpoint with another key is ignored.
        val: validation samples for the curve of PSNR.
        log_fn: called with each history row (``phase``, ``step``, losses, ``val_psnr``...).
    """

    def __init__(self, model: UnfoldedHQS, sampler: Sampler, cfg: TrainConfig, device: torch.device,
                 rng: np.random.Generator, checkpoint: Path | None = None, config_key: str = "",
                 val: list[ValSample] | None = None, log_fn: Callable[[dict], None] | None = None,
                 progress: bool = True):
        self.model, self.sampler, self.cfg, self.device, self.rng = model.to(device), sampler, cfg, device, rng
        self.checkpoint = checkpoint
        # the architecture is part of the key: a checkpoint of other shapes never half-loads
        shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
        self.config_key = f"{config_key}/{hashlib.sha256(shapes.encode()).hexdigest()[:12]}"
        self.val = val or []
        self.log_fn = log_fn or (lambda row: None)
        self.progress = progress
        self._init_optimizers()
        # the proxy's warm start needs the guidance truth, which real pairs lack (it then learns in
        # the bilevel phase, from the outer loss alone)
        self.batch_spec = BatchSpec(cfg.batch_size, cfg.pretrain_sigma_max / 255.0,
                                    model.guidance_mode == "learned" and sampler.has_targets)
        # worker processes draw batch i of a phase from a seed of its own (pipeline.batches)
        self.stream_seed = int(hashlib.sha256(self.config_key.encode()).hexdigest()[:15], 16)
        self.amp = amp_dtype(cfg.amp, device)  # None: full precision
        self.scaler = grad_scaler(self.amp, device)
        if self.scaler is not None and hasattr(self, "strategy"):  # config validation allows fp16 only
            self.strategy.scaler = self.scaler  # with strategies that take a scaler
        self.phase, self.step, self.history = "pretrain", 0, []
        self.nonfinite = 0
        self.pretrained: dict = {}  # the denoiser right after pre-training: the plug-and-play prior
        self.resumed_from: int | None = None
        # wall and process CPU-seconds of every process that trained this run, up to its last
        # checkpoint (work lost to a kill after it is redone, so not counted): a resumed run's total
        # is what an uninterrupted one would record, and the tuning budget is that total
        self._spent_before = {"seconds": 0.0, "cpu_seconds": 0.0}
        self._clock: tuple[float, float] | None = None  # (perf_counter, process_time) when run() began
        self.pool = None  # train.data_workers' processes while run() runs

    def _init_optimizers(self) -> None:
        cfg, model = self.cfg, self.model
        self.pre_opt = torch.optim.Adam(model.denoiser.parameters(), lr=cfg.lr)
        self.proxy_opt = torch.optim.Adam(model.proxy.parameters(), lr=cfg.lr_inner)
        self.strategy = make_strategy(cfg.strategy, model, cfg.lr, cfg.lr_inner, cfg.guidance_weight,
                                      **strategy_options(cfg))

    def _optimizer_state(self) -> dict:
        return {"pretrain_opt": self.pre_opt.state_dict(), "proxy_opt": self.proxy_opt.state_dict(),
                "strategy": self.strategy.state_dict()}

    def _load_optimizer_state(self, state: dict) -> None:
        self.pre_opt.load_state_dict(state["pretrain_opt"])
        self.proxy_opt.load_state_dict(state["proxy_opt"])
        self.strategy.load_state_dict(state["strategy"])

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "config_key": self.config_key, "phase": self.phase, "step": self.step,
            "model": self.model.state_dict(), **self._optimizer_state(),
            "rng": self.rng.bit_generator.state, "history": self.history,
            "pretrained": self.pretrained, "spent": self.spent,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def save(self) -> None:
        if self.checkpoint is None or world()[0] != 0:  # data-parallel workers hold the same state
            return
        with atomic_path(self.checkpoint) as tmp:
            torch.save(self.state(), tmp)

    def try_resume(self) -> bool:
        """Load the checkpoint if it exists and matches this configuration."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=True)
        except Exception as exc:  # a truncated file from a crash mid-write cannot exist (atomic), but be safe
            log.warning("ignoring unreadable checkpoint %s: %s", self.checkpoint, exc)
            return False
        if state.get("format") != CHECKPOINT_FORMAT or state.get("config_key") != self.config_key:
            log.info("checkpoint %s belongs to another configuration: starting afresh", self.checkpoint)
            return False
        self.model.load_state_dict(state["model"])
        self._load_optimizer_state(state)
        self.rng.bit_generator.state = state["rng"]
        self.phase, self.step, self.history = state["phase"], state["step"], list(state["history"])
        self.pretrained = state["pretrained"]
        self._spent_before = {k: float(v) for k, v in state["spent"].items()}
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.resumed_from = self.step
        log.info("resumed from %s: phase %s, step %d", self.checkpoint, self.phase, self.step)
        return True

    @property
    def spent(self) -> dict[str, float]:
        """``{"seconds", "cpu_seconds"}``: wall clock and process CPU time (every thread) this
        training has taken, over every process that worked on it (a resumed one's predecessors up
        to the checkpoint it resumed from, then this one's ``run``)."""
        if self._clock is None:
            return dict(self._spent_before)
        wall, cpu = self._clock
        return {"seconds": self._spent_before["seconds"] + time.perf_counter() - wall,
                "cpu_seconds": self._spent_before["cpu_seconds"] + time.process_time() - cpu}

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> list[dict]:
        self._clock = (time.perf_counter(), time.process_time())
        workers = worker_pool(self.sampler, self.cfg.data_workers) if self.cfg.data_workers else contextlib.nullcontext()
        try:
            with workers as self.pool:  # one pool for both phases (None: batches drawn in this process)
                return self._run()
        finally:  # stop the clock: ``spent`` is then this run's total, read after it
            self._spent_before, self._clock = self.spent, None

    def _run(self) -> list[dict]:
        self.try_resume()
        if self.phase == "pretrain":
            self._loop("pretrain", self.cfg.pretrain_steps, self._pretrain_step)
            self.pretrained = {k: v.detach().clone() for k, v in self.model.denoiser.state_dict().items()}
            self.model.sync_proxies()  # per-stage proxies start from the pre-trained one
            self.phase, self.step = "bilevel", 0
            self.save()
        if self.phase == "bilevel":
            self._loop("bilevel", self.cfg.steps, self._bilevel_step)
            self.phase = "done"
            self.save()
        return self.history

    @contextlib.contextmanager
    def _batches(self, phase: str, total: int):
        """``next_batch()`` for the steps ``self.step .. total`` of ``phase``: drawn here from the
        run's stream, or by ``train.data_workers`` processes ahead of the loop."""
        if self.pool is None:
            yield lambda: draw_batch(self.sampler, self.rng, phase, self.batch_spec)
            return
        with Prefetcher(self.pool, self.stream_seed, phase, self.batch_spec, self.step, total,
                        2 * self.cfg.data_workers) as prefetcher:
            yield prefetcher.next

    def _loop(self, phase: str, total: int, step_fn: Callable[[dict], dict[str, float]]) -> None:
        with self._batches(phase, total) as next_batch:
            self._steps(phase, total, step_fn, next_batch)

    def _steps(self, phase: str, total: int, step_fn: Callable[[dict], dict[str, float]],
               next_batch: Callable[[], dict]) -> None:
        self.model.train()
        bar = tqdm(total=total, initial=self.step, desc=phase, disable=not self.progress, leave=False)
        running: dict[str, list[float]] = {}
        t0, n = time.perf_counter(), 0
        while self.step < total:
            # data-parallel workers log (and stop on) the global batch's losses
            losses = {k: mean_value(v) for k, v in step_fn(next_batch()).items()}
            self._check_finite(phase, losses)
            self.step += 1
            n += 1
            bar.update(1)
            for k, v in losses.items():
                running.setdefault(k, []).append(v)
            last = self.step == total
            if self.step % self.cfg.log_every == 0 or last:
                row = {"phase": phase, "step": self.step, **{k: float(np.mean(v)) for k, v in running.items()},
                       "seconds_per_step": (time.perf_counter() - t0) / n}
                if self.step % self.cfg.checkpoint_every == 0 or last:
                    row["val_psnr"] = self.validate(phase)
                self.history.append(row)
                self.log_fn(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("phase", "step")})
                running, t0, n = {}, time.perf_counter(), 0
            if self.step % self.cfg.checkpoint_every == 0 and not last:
                self.save()
        bar.close()

    def _check_finite(self, phase: str, losses: dict[str, float]) -> None:
        if all(math.isfinite(v) for v in losses.values()):
            self.nonfinite = 0
            return
        self.nonfinite += 1
        log.warning("%s step %d: non-finite loss %s, update skipped", phase, self.step, losses)
        if self.nonfinite >= self.cfg.max_nonfinite:
            where = f"; the last good checkpoint is kept at {self.checkpoint}" if self.checkpoint else ""
            raise TrainingDiverged(f"{phase} step {self.step}: {self.nonfinite} non-finite losses in a row {losses}"
                                   f" (lower train.lr?){where}")

    def _pretrain_step(self, batch: dict) -> dict[str, float]:
        """One step on denoising for the prior and, with learned guidance, one step of the inner
        problem for the proxy (noise-level estimation on blurred noisy patches): a warm start
        for both levels. Needs clean patches (a real-pair sampler has them: the clean image of each pair)."""
        # every data-parallel worker draws the global batch (same stream) and keeps its share
        clean, noisy, sigma = (to_device(shard(batch[k]), self.device) for k in ("clean", "noisy", "sigma"))
        with self._autocast():
            out = self.model.denoiser(noisy, sigma)
        loss = F.mse_loss(out.float(), clean)
        apply_step(self.pre_opt, loss, self.scaler)
        losses = {"loss": loss.item()}
        if self.batch_spec.with_proxy:
            b = {k: shard(batch[k]) for k in ("y", "target")}
            with self._autocast():
                estimate = self.model.proxy_map(to_device(b["y"], self.device))
            g = F.mse_loss(estimate.float(), to_device(b["target"], self.device))
            apply_step(self.proxy_opt, self.cfg.guidance_weight * g, self.scaler)
            losses["guidance_loss"] = g.item()
        return losses

    def _bilevel_step(self, batch: dict) -> dict[str, float]:
        b = {k: to_device(shard(v), self.device) for k, v in batch.items()}
        batch = {"physics": bind_physics(b["y"], b.get("kernel")), "x": b["x"], "target": b.get("target")}
        # cosine decay over the bilevel phase: a function of the step, so resuming keeps it
        set_lr_scale(self.strategy, 0.5 * (1 + math.cos(math.pi * self.step / max(self.cfg.steps, 1))))
        with self._autocast():
            return self.strategy.step(batch)

    def _autocast(self):
        """The networks in ``train.amp``'s precision (a no-op at full precision)."""
        return autocast(self.device, self.amp is not None, self.amp)

    @torch.no_grad()
    def validate(self, phase: str) -> float:
        """Mean PSNR on the validation samples: the denoiser alone (deblurring pre-training: a PnP
        run is not yet meaningful, so denoise the blurred image's noise) or the unfolded model
        (the rain and haze models start from classical estimates, so from the first phase on)."""
        if not self.val:
            return float("nan")
        self.model.eval()
        scores = []
        for s in self.val:
            y, x = s.y.to(self.device), s.x.to(self.device)
            target = s.target.to(self.device) if s.target is not None else None  # a real pair has none
            with self._autocast():
                if phase == "pretrain" and s.kernel is not None:
                    reference = BlurPhysics(x, s.kernel).A(x)  # the clean blurred image
                    out = self.model.denoiser(y, target)  # deblurring's target: the noise-level map
                else:
                    reference = x
                    out = self.model(bind_physics(y, s.kernel), target=target).x
            scores.append(psnr(out[0].float().permute(1, 2, 0).cpu().numpy(),
                               reference[0].permute(1, 2, 0).cpu().numpy()))
        self.model.train()
        return float(np.mean(scores))


class DirectTrainer(Trainer):
    """Train the ``direct_cnn`` control (:class:`pipeline.models.direct.DirectCNN`) on the same
    data for the same number of steps as the unfolded model: one phase, ``direct``, of
    ``train.pretrain_steps + train.steps`` Adam steps at ``train.lr`` with the same cosine decay,
    the MSE to the clean patch on the bilevel phase's degraded batches (it has no denoiser to
    pre-train). Checkpoints, resume, AMP, non-finite checks and validation are the base class's."""

    def _init_optimizers(self) -> None:
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)

    def _optimizer_state(self) -> dict:
        return {"direct_opt": self.opt.state_dict()}

    def _load_optimizer_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["direct_opt"])

    def _run(self) -> list[dict]:
        self.try_resume()
        if self.phase == "pretrain":  # a fresh run: the one phase
            self.phase = "direct"
        if self.phase == "direct":
            self._loop("direct", self.cfg.pretrain_steps + self.cfg.steps, self._direct_step)
            self.phase = "done"
            self.save()
        return self.history

    def _direct_step(self, batch: dict) -> dict[str, float]:
        b = {k: to_device(shard(v), self.device) for k, v in batch.items()}
        total = self.cfg.pretrain_steps + self.cfg.steps
        for group in self.opt.param_groups:  # cosine decay over the run, a function of the step (resume keeps it)
            group["lr"] = self.cfg.lr * 0.5 * (1 + math.cos(math.pi * self.step / max(total, 1)))
        with self._autocast():
            out = self.model(bind_physics(b["y"], b.get("kernel"))).x
        loss = F.mse_loss(out.float(), b["x"])
        apply_step(self.opt, loss, self.scaler)
        return {"loss": loss.item()}
