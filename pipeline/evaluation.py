"""Run every method on one degraded sample, score it, and aggregate scores into tables.

Shared by the ``evaluate`` stage and the benchmark command, so both report the same methods
under the same names and the same protocol (PSNR/SSIM via ``skimage.metrics``, the kernel's
half-size cropped from each border).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.baselines.filters import dark_channel_prior, median_derain
from pipeline.baselines.pnp import estimate_noise_level, run_map_schedule, run_schedule
from pipeline.baselines.schedules import dpir_schedule, ircnn_schedule
from pipeline.baselines.tuning import CLASSICAL, tuned_schedule
from pipeline.data import chw_to_hwc
from pipeline.device import autocast
from pipeline.metrics import kernel_crop, psnr, ssim
from pipeline.models.task_models import Observation
from pipeline.models.unfolded import UnfoldedHQS
from pipeline.physics.blur import BlurPhysics

PNP_METHODS = ("ircnn_blind", "ircnn_true", "ircnn_estimated", "dpir_blind", "dpir_true", "dpir_estimated")
TUNED_METHODS = ("optuna_global", "optuna_per_noise")
CLASSICAL_METHODS = ("wiener", "richardson_lucy", "tv")
METHODS = ("input", "learned", *PNP_METHODS, "true_sigma_map")
ALL_METHODS = (*METHODS, *TUNED_METHODS, *CLASSICAL_METHODS)


def per_noise_params(tuned: dict, level: float) -> dict:
    """The schedule tuned for the noise level (percent) nearest to ``level``."""
    table = tuned["per_noise"]
    nearest = min(table, key=lambda k: abs(float(k) - level))
    return table[nearest]


@dataclass
class Restoration:
    """Every method's output for one sample, with what the learned model predicted."""

    outputs: dict[str, np.ndarray]  # method -> (C, H, W)
    guidance: list[np.ndarray]  # K learned maps (H, W), one per stage
    noise_estimate: np.ndarray  # (H, W) the proxy on y: its estimate of the true noise map
    estimated_sigma: float  # the classical estimate fed to the *_estimated baselines
    rhos: np.ndarray  # (K,) the learned model's penalties


@torch.no_grad()
def restore(y: np.ndarray, kernel: np.ndarray, sigma_map: np.ndarray, model: UnfoldedHQS, denoiser: torch.nn.Module,
            device: torch.device, nominal_sigma: float, ircnn_iters: int = 30, dpir_iters: int = 8,
            methods: tuple[str, ...] = METHODS, tuned: dict | None = None) -> Restoration:
    """Restore one observation with every method in ``methods``.

    Args:
        y: ``(C, H, W)`` observation.
        kernel: ``(kh, kw)`` the known blur.
        sigma_map: ``(1, H, W)`` the true noise map (for ``*_true`` and ``true_sigma_map`` only).
        model: the trained unfolded model; ``denoiser`` the pre-trained one for plug-and-play.
        nominal_sigma: what the blind baselines are told ([0, 1] units).
        tuned: the ``tune`` stage's winners (needed for the Optuna and classical methods);
            ``optuna_per_noise`` is told the true level, so it picks that level's schedule.
    """
    yt = torch.from_numpy(y)[None].to(device)
    physics = BlurPhysics(yt, torch.from_numpy(kernel))
    smap = torch.from_numpy(sigma_map)[None].to(device)
    true_level = float(sigma_map.mean())
    est = estimate_noise_level(y)
    told = {"blind": nominal_sigma, "true": true_level, "estimated": est}
    out: dict[str, np.ndarray] = {}
    guidance: list[np.ndarray] = []
    rhos = np.zeros(0, np.float32)
    noise_estimate = np.zeros(sigma_map.shape[-2:], np.float32)
    with autocast(device):
        if "input" in methods:
            out["input"] = y
        if "learned" in methods:
            res = model(physics, sigma_map=smap)
            out["learned"] = res.x[0].float().cpu().numpy()
            guidance = [g[0, 0].float().cpu().numpy() for g in res.guidance]
            rhos = (res.rhos[0] if res.rhos.dim() == 2 else res.rhos).float().cpu().numpy()
            noise_estimate = model.estimate_noise(yt)[0, 0].float().cpu().numpy()
        for name in PNP_METHODS:
            if name not in methods:
                continue
            family, mode = name.split("_")
            schedule = (ircnn_schedule(told[mode], ircnn_iters) if family == "ircnn"
                        else dpir_schedule(told[mode], dpir_iters))
            out[name] = run_schedule(physics, denoiser, schedule).x[0].float().cpu().numpy()
        if "true_sigma_map" in methods:
            if np.ptp(sigma_map) == 0 and "ircnn_true" in out:
                out["true_sigma_map"] = out["ircnn_true"]  # a constant map is exactly the scalar rule
            else:
                out["true_sigma_map"] = run_map_schedule(physics, denoiser, smap, ircnn_iters).x[0].float().cpu().numpy()
        for name in TUNED_METHODS:
            if name in methods:
                if tuned is None:
                    raise ValueError(f"method {name} needs the tuned schedules (the tune stage's output)")
                p = tuned["global"] if name == "optuna_global" else per_noise_params(tuned, true_level * 100)
                schedule = tuned_schedule(p["lam"], p["s_start"], p["s_end"], int(p["iterations"]))
                out[name] = run_schedule(physics, denoiser, schedule).x[0].float().cpu().numpy()
    for name in CLASSICAL_METHODS:
        if name in methods:
            if tuned is None:
                raise ValueError(f"method {name} needs the tuned knobs (the tune stage's output)")
            fn, knob, _, integer = CLASSICAL[name]
            value = tuned["classical"][name][knob]
            out[name] = fn(y, kernel, **{knob: int(value) if integer else float(value)})
    return Restoration(out, guidance, noise_estimate, est, rhos)


TASK_METHODS = ("input", "learned", "no_guidance", "classical")
CLASSICAL_TASK = {"derain": "median filtering (min(y, median_5(y)))",
                  "dehaze": "dark channel prior with guided-filter refinement"}


def classical_restore(task: str, y: np.ndarray) -> np.ndarray:
    """The classical baseline of a blind task on ``y (C, H, W)``: the median-filter rain
    decomposition or the dark channel prior with guided filtering (:mod:`pipeline.baselines.filters`)."""
    if task == "derain":
        return median_derain(y)
    if task == "dehaze":
        return dark_channel_prior(y)[0]
    raise ValueError(f"no classical baseline for task {task!r}")


@torch.no_grad()
def restore_task(task: str, y: np.ndarray, model: torch.nn.Module, device: torch.device,
                 ablation: torch.nn.Module | None = None, target: np.ndarray | None = None) -> Restoration:
    """Rain or haze removal of ``y (C, H, W)`` by every method: ``input``, ``learned`` (the task
    model), ``classical`` and, with an ``ablation`` model (trained with guidance ``none``),
    ``no_guidance``. ``noise_estimate`` is the proxy's map on ``y`` (the predicted density /
    transmission correction), ``guidance`` the K maps fed to the denoiser. ``target (1, H, W)``, the
    true guidance map, is what a model with ``oracle`` guidance is given."""
    yt = torch.from_numpy(np.ascontiguousarray(y))[None].to(device)
    truth = torch.from_numpy(target)[None].to(device) if target is not None else None
    out: dict[str, np.ndarray] = {"input": y}
    with autocast(device):
        res = model(Observation(yt), sigma_map=truth)
        out["learned"] = res.x[0].float().clamp(0, 1).cpu().numpy()
        estimate = model.estimate_noise(yt)[0, 0].float().cpu().numpy()
        if ablation is not None:
            out["no_guidance"] = ablation(Observation(yt)).x[0].float().clamp(0, 1).cpu().numpy()
    out["classical"] = classical_restore(task, y)
    guidance = [g[0, 0].float().cpu().numpy() for g in res.guidance]
    return Restoration(out, guidance, estimate, float("nan"), res.rhos.float().cpu().numpy())


def score(outputs: dict[str, np.ndarray], x: np.ndarray, kernel_shape: tuple[int, int]) -> dict[str, dict[str, float]]:
    """``{method: {"psnr": .., "ssim": ..}}`` against ``x (C, H, W)``, kernel border cropped."""
    crop = kernel_crop(kernel_shape)
    gt = chw_to_hwc(x)
    return {m: {"psnr": psnr(chw_to_hwc(o), gt, crop), "ssim": ssim(chw_to_hwc(o), gt, crop)} for m, o in outputs.items()}


def level_key(level: float) -> str:
    """``3.0 -> "3"``, ``2.55 -> "2.55"``: the noise-level keys of the metrics JSON."""
    return f"{level:g}"


def aggregate(rows: list[dict], noise_levels: list[float], methods: list[str]) -> dict:
    """The metrics JSON from per-(sample, method) rows with keys ``method, noise_level, psnr, ssim,
    image, kernel_id``: per noise level and overall means (overall = mean of the per-level means,
    so every level weighs the same). With no ``noise_levels`` (rain, haze: rows without
    ``noise_level`` nor ``kernel_id``) the overall means are over all rows and the per-level
    tables are empty."""
    result: dict = {"noise_levels": [float(l) if l != int(l) else int(l) for l in noise_levels], "methods": {}}
    for m in methods:
        entry: dict = {"psnr": {}, "ssim": {}}
        for metric in ("psnr", "ssim"):
            per_level = []
            for level in noise_levels:
                vals = [r[metric] for r in rows if r["method"] == m and abs(float(r["noise_level"]) - level) < 1e-6]
                if vals:
                    entry[metric][level_key(level)] = float(np.mean(vals))
                    per_level.append(float(np.mean(vals)))
            if not noise_levels:  # rain, haze: no noise levels, the mean over every sample
                per_level = [float(np.mean(vals))] if (vals := [r[metric] for r in rows if r["method"] == m]) else []
            entry[f"{metric}_mean"] = float(np.mean(per_level)) if per_level else float("nan")
        result["methods"][m] = entry
    result["n_images"] = len({r["image"] for r in rows})
    if any("kernel_id" in r for r in rows):
        result["n_kernels"] = len({r["kernel_id"] for r in rows})
    return result
