"""Synthetic degraded samples: generators (what is drawn) composed with physics (what it does).

One function serves the ``degrade`` stage (fixed val/test samples, recorded) and training
(fresh samples every batch), so both see exactly the same degradation model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.config import DegradeConfig, HazeConfig
from pipeline.generators import noise_maps
from pipeline.generators.haze import add_haze
from pipeline.generators.kernels import KernelSample, pad_to
from pipeline.generators.rain import RainSpec, add_rain, heavy_spec
from pipeline.physics.blur import blur, psf2otf
from pipeline.physics.haze import transmission_correction
from pipeline.physics.noise import add_gaussian_noise


@dataclass
class BlurSample:
    """One degraded observation and its ground truth of degradation."""

    y: np.ndarray  # (C, H, W) float32, not clipped (the noise model is additive Gaussian)
    sigma_map: np.ndarray  # (1, H, W) float32, true noise std per pixel, [0, 1] units
    kernel: np.ndarray  # (k, k) float32
    record: dict = field(default_factory=dict)  # drawn parameters, for the per-sample table


def blur_circular(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``k * x`` with circular boundaries. ``x (C, H, W)``, ``kernel (kh, kw)`` -> ``(C, H, W)``."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    otf = psf2otf(torch.from_numpy(kernel), tuple(x.shape[-2:]))
    return blur(xt, otf)[0].numpy()


def noise_map(rng: np.random.Generator, shape: tuple[int, int], level: float, mode: str, spread: float) -> np.ndarray:
    """``(1, H, W)`` true noise map for a level in [0, 1] units; ``mode`` constant or varying."""
    if mode == "constant":
        return noise_maps.constant_map(shape, level)
    if mode == "varying":
        return noise_maps.smooth_map(rng, shape, level, spread)
    raise ValueError(f"unknown noise mode {mode!r}")


def degrade(x: np.ndarray, kernel: KernelSample, level: float, mode: str, spread: float,
            rng: np.random.Generator) -> BlurSample:
    """Blur ``x (C, H, W)`` circularly with ``kernel``, then add noise of mean level ``level``."""
    kh, kw = kernel.kernel.shape
    if kh > x.shape[-2] or kw > x.shape[-1]:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {x.shape[-2]}x{x.shape[-1]}")
    sigma = noise_map(rng, x.shape[-2:], level, mode, spread)
    y = add_gaussian_noise(blur_circular(x, kernel.kernel), sigma, rng)
    record = {"kernel_kind": kernel.kind, "kernel_size": kh, "noise_level": round(level * 100, 4), "noise_mode": mode}
    return BlurSample(y, sigma, kernel.kernel, record)


def batch_tensors(samples: list[BlurSample], clean: list[np.ndarray], kernel_size: int) -> dict[str, torch.Tensor]:
    """Stack samples of one patch size into ``x, y (B, C, P, P)``, ``sigma (B, 1, P, P)``,
    ``kernel (B, k, k)`` (zero-padded to ``kernel_size``, centres aligned)."""
    return {
        "x": torch.from_numpy(np.stack(clean)),
        "y": torch.from_numpy(np.stack([s.y for s in samples])),
        "target": torch.from_numpy(np.stack([s.sigma_map for s in samples])),
        "kernel": torch.from_numpy(np.stack([pad_to(s.kernel, kernel_size) for s in samples])),
    }


@dataclass
class TaskSample:
    """One rainy or hazy observation and its recorded ground truth of degradation.

    ``y (C, H, W)``; ``target (1, H, W)`` the guidance map the proxy learns (the streak density
    for rain, the transmission correction ``log(t / t_dcp)`` for haze); ``truth`` the drawn degradation itself
    (rain: ``streaks (1, H, W)``, ``density``; haze: ``t (1, H, W)``, ``airlight (C,)``, ``depth (H, W)``).
    """

    y: np.ndarray
    target: np.ndarray
    truth: dict[str, np.ndarray]
    record: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """What is drawn for the rain and haze tasks (default ranges: ``degrade``'s)."""

    task: str  # derain | dehaze
    rain: RainSpec = RainSpec()
    beta: tuple[float, float] = HazeConfig.beta
    airlight: tuple[float, float] = HazeConfig.airlight


def task_spec(task: str, cfg: DegradeConfig) -> TaskSpec:
    """The rain / haze draws of the ``degrade`` config (``degrade.rain``, ``degrade.haze``)."""
    r, h = cfg.rain, cfg.haze
    rain = (heavy_spec() if r.style == "heavy"
            else RainSpec(density=r.density, length=r.length, brightness=r.brightness, heavy=r.heavy))
    return TaskSpec(task, rain, h.beta, h.airlight)


def degrade_task(x: np.ndarray, spec: TaskSpec, rng: np.random.Generator, depth: np.ndarray | None = None,
                 with_target: bool = True) -> TaskSample:
    """Rain or haze on ``x (C, H, W)`` (``depth (H, W)``: a given depth map for haze, else the
    proxy). ``with_target=False`` skips the haze target (training computes it on its crops:
    ``target`` is then empty). Raises ValueError for a depth map of another size than the image."""
    if spec.task == "derain":
        s = add_rain(x, rng, spec.rain)
        return TaskSample(s.y, s.density, {"streaks": s.streaks[:1], "density": s.density}, s.record)
    if spec.task == "dehaze":
        s = add_haze(x, rng, depth, spec.beta, spec.airlight)
        target = np.zeros((0,) + x.shape[-2:], np.float32)
        if with_target:
            target = transmission_correction(torch.from_numpy(s.y)[None], torch.from_numpy(s.t)[None])[0].numpy()
        return TaskSample(s.y, target, {"t": s.t, "airlight": s.airlight, "depth": s.depth}, s.record)
    raise ValueError(f"unknown task {spec.task!r}; known: derain, dehaze")
