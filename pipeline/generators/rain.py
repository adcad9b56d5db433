"""Synthetic rain: the draws (thin, motion-blurred line segments around a dominant angle; a veil
for heavy rain) for the rain operator of :mod:`pipeline.physics.rain`, ``y = x + r``.

Every draw comes from the ``rng`` passed in and is returned in a record, so a sample can be
regenerated and audited. Images are ``(C, H, W)`` float32 in [0, 1]; the ranges default to
``degrade.rain``'s (:class:`pipeline.config.RainConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.config import RainConfig
from pipeline.physics.rain import rain


@dataclass(frozen=True)
class RainSpec:
    """Ranges the streak parameters are drawn from (uniformly unless stated)."""

    density: tuple[float, float] = RainConfig.density  # streak centres per pixel
    length: tuple[float, float] = RainConfig.length  # fraction of the longer side
    width: tuple[float, float] = (0.6, 1.6)  # Gaussian thickness (sigma, px)
    brightness: tuple[float, float] = RainConfig.brightness
    angle_spread: float = 6.0  # degrees around the dominant angle (normal sd)
    max_angle: float = 30.0  # the dominant angle, degrees from vertical, in [-max, max]
    heavy: bool = RainConfig.heavy  # add an atmospheric veil
    veil: tuple[float, float] = (0.6, 0.9)  # heavy rain: fraction of the scene that gets through
    density_scale: float = 0.06  # density map smoothing, fraction of the longer side
    layers: tuple[int, int] = (1, 1)  # streak layers per image, drawn in this range (heavy: several)
    layer_spread: float = 0.0  # degrees (normal sd) of each further layer's angle around the first's


# the heavy preset, set against Rain100H's 25 pairs by scripts/rain_preview.py (luma PSNR of the
# input, light added, coverage): long, thin, semi-transparent layers plus a light veil
HEAVY = dict(density=(0.0005, 0.0015), length=(0.2, 0.6), brightness=(0.2, 0.5), width=(0.6, 1.4),
             veil=(0.75, 0.9), layers=(2, 4), layer_spread=10.0)


def heavy_spec() -> RainSpec:
    """``degrade.rain.style: heavy``, Rain100H's kind of rain (:data:`HEAVY`): 2-4 streak layers
    at angles about 10 degrees (sd) apart around a common one, long and semi-transparent streaks,
    always an atmospheric veil (rain accumulation)."""
    return RainSpec(**HEAVY, heavy=True)


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised motion-blur line kernel of ``length`` px along ``angle_deg`` from vertical."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size), np.float64)
    c = size // 2
    a = np.deg2rad(angle_deg)
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        k[int(round(c + s * np.cos(a))), int(round(c + s * np.sin(a)))] = 1.0
    return k / k.sum()


def streak_layer(rng: np.random.Generator, shape: tuple[int, int], spec: RainSpec = RainSpec(),
                 dominant: float | None = None) -> tuple[np.ndarray, dict]:
    """A streak layer ``(H, W)`` in [0, 1] and the record of its draws.

    Streak centres follow a smooth random intensity (so density varies over the image);
    each streak is a segment of random length, angle (around a dominant one, drawn unless
    ``dominant`` is given, degrees from vertical), width and brightness, rasterised, then the
    layer is motion-blurred along the dominant angle.
    """
    h, w = shape
    side = max(h, w)
    if dominant is None:
        dominant = float(rng.uniform(-spec.max_angle, spec.max_angle))
    density = float(rng.uniform(*spec.density))
    n = max(1, int(round(density * h * w)))
    intensity = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=side / 6, mode="wrap")
    intensity = np.exp(1.5 * intensity / (intensity.std() + 1e-12))
    centres = rng.choice(h * w, size=n, p=(intensity / intensity.sum()).ravel())
    cy, cx = np.divmod(centres, w)
    lengths = rng.uniform(*spec.length, size=n) * side
    angles = np.deg2rad(dominant + rng.normal(0.0, spec.angle_spread, size=n))
    brightness = rng.uniform(*spec.brightness, size=n)
    width = float(rng.uniform(*spec.width))
    # rasterise every segment at once: L points along each, wrapped at the borders
    steps = int(np.ceil(lengths.max())) * 2 + 1
    t = np.linspace(-0.5, 0.5, steps)[None, :] * lengths[:, None]
    ys = np.rint(cy[:, None] + t * np.cos(angles)[:, None]).astype(int) % h
    xs = np.rint(cx[:, None] + t * np.sin(angles)[:, None]).astype(int) % w
    layer = np.zeros((h, w), np.float64)
    np.maximum.at(layer, (ys.ravel(), xs.ravel()), np.repeat(brightness, steps))
    layer = ndimage.gaussian_filter(layer, sigma=width, mode="wrap") * (2 * np.pi * width**2) ** 0.5
    blur_len = int(rng.integers(3, 8))
    layer = ndimage.convolve(layer, _line_kernel(blur_len, dominant), mode="wrap")
    layer = np.clip(layer, 0.0, 1.0).astype(np.float32)
    record = {"rain_angle": round(dominant, 3), "rain_density": round(density, 6), "rain_streaks": n,
              "rain_width": round(width, 3), "rain_blur": blur_len}
    return layer, record


def streak_layers(rng: np.random.Generator, shape: tuple[int, int], spec: RainSpec = RainSpec()) -> tuple[np.ndarray, dict]:
    """``spec.layers`` streak layers ``(H, W)`` summed and clipped to [0, 1], and the record: one
    layer (light rain) is :func:`streak_layer` itself, the same draws; several (heavy rain) share a
    common angle, each further one turned by a normal draw of ``spec.layer_spread`` degrees, and
    each draws its own density, lengths, width and blur. The record sums the densities and
    streaks, keeps the common angle and the widest width, and adds ``rain_layers`` and
    ``rain_layer_angles`` (degrees, ';'-joined)."""
    if spec.layers == (1, 1):
        return streak_layer(rng, shape, spec)
    n = int(rng.integers(spec.layers[0], spec.layers[1] + 1))
    common = float(rng.uniform(-spec.max_angle, spec.max_angle))
    total = np.zeros(shape, np.float64)
    records = []
    for i in range(n):
        angle = common if i == 0 else common + float(rng.normal(0.0, spec.layer_spread))
        layer, record = streak_layer(rng, shape, spec, dominant=angle)
        total += layer
        records.append(record)
    record = {"rain_angle": round(common, 3), "rain_density": round(sum(r["rain_density"] for r in records), 6),
              "rain_streaks": sum(r["rain_streaks"] for r in records),
              "rain_width": max(r["rain_width"] for r in records), "rain_blur": max(r["rain_blur"] for r in records),
              "rain_layers": n, "rain_layer_angles": ";".join(str(r["rain_angle"]) for r in records)}
    return np.clip(total, 0.0, 1.0).astype(np.float32), record


def density_map(layer: np.ndarray, scale: float) -> np.ndarray:
    """``(1, H, W)`` local streak density: the layer smoothed at ``scale`` px (mean-preserving)."""
    return ndimage.gaussian_filter(layer.astype(np.float64), sigma=max(scale, 0.5), mode="wrap").astype(np.float32)[None]


@dataclass
class RainSample:
    """One rainy observation: ``y, streaks (C, H, W)``, ``density (1, H, W)`` (the guidance
    target) and the veil drawn, ``veil`` and ``airlight`` (1 and 1 for light rain; ``record``
    rounds them)."""

    y: np.ndarray
    streaks: np.ndarray
    density: np.ndarray
    veil: float
    airlight: float
    record: dict


def add_rain(x: np.ndarray, rng: np.random.Generator, spec: RainSpec = RainSpec()) -> RainSample:
    """Rain on ``x (C, H, W)``: ``y = x + r`` (or behind a veil when ``spec.heavy``), clipped.

    The streak layer is white (the same in every channel), as rain is.
    """
    c, h, w = x.shape
    layer, record = streak_layers(rng, (h, w), spec)
    veil, airlight = 1.0, 1.0
    if spec.heavy:
        veil, airlight = float(rng.uniform(*spec.veil)), float(rng.uniform(0.8, 1.0))
    y = rain(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(layer[None]), veil, airlight)
    y = y.numpy().astype(np.float32)
    streaks = np.repeat(layer[None], c, axis=0)
    record.update({"rain_veil": round(veil, 4), "rain_airlight": round(airlight, 4)})
    return RainSample(y, streaks, density_map(layer, spec.density_scale * max(h, w)), veil, airlight, record)
