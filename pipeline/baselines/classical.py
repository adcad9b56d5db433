"""Classical non-learned deconvolution baselines (``skimage.restoration``), one function each.

Every function maps ``y (C, H, W)`` and a centred ``kernel (kh, kw)`` to ``(C, H, W)``, channel
by channel; the tuning knob of each is an argument (tuned on validation data by the caller).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage import restoration

from pipeline.physics.blur import BlurPhysics


def _per_channel(y: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(np.asarray(c, dtype=np.float64)) for c in y]).astype(np.float32)


def wiener(y: np.ndarray, kernel: np.ndarray, balance: float = 0.01) -> np.ndarray:
    """Wiener-Hunt deconvolution with a Laplacian regulariser (``skimage.restoration.wiener``);
    ``balance`` trades data fit against smoothness."""
    return _per_channel(y, lambda c: restoration.wiener(c, kernel, balance, clip=False))


def unsupervised_wiener(y: np.ndarray, kernel: np.ndarray, seed: int = 0) -> np.ndarray:
    """Wiener-Hunt with hyper-parameters sampled by Gibbs (``skimage.restoration.unsupervised_wiener``)."""
    rng = np.random.default_rng(seed)
    return _per_channel(y, lambda c: restoration.unsupervised_wiener(c, kernel, clip=False, rng=rng)[0])


def richardson_lucy(y: np.ndarray, kernel: np.ndarray, num_iter: int = 30) -> np.ndarray:
    """Richardson-Lucy (``skimage.restoration.richardson_lucy``); it needs non-negative data, so
    ``y`` is clipped to [0, 1] first. ``num_iter`` is the regulariser (early stopping)."""
    return _per_channel(np.clip(y, 0, 1), lambda c: restoration.richardson_lucy(c, kernel, num_iter=num_iter, clip=False))


def tv_deconvolution(y: np.ndarray, kernel: np.ndarray, lam: float = 2e-3, iterations: int = 20) -> np.ndarray:
    """Total-variation regularised deconvolution, ``min ||k * x - y||^2 + 2 lam TV(x)``, by
    half-quadratic splitting with continuation: the exact FFT data step (penalty ``rho``) alternated
    with the TV proximal step, which is TV denoising of weight ``lam / rho``
    (``skimage.restoration.denoise_tv_chambolle``); ``rho`` grows geometrically from 1e-3 to 1."""
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None]
    physics = BlurPhysics(yt, torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)))
    x = physics.init()
    for rho in np.geomspace(1e-3, 1.0, iterations):
        z = physics.data_step(x, float(rho))[0].numpy()
        weight = min(lam / rho, 1.0)
        x = torch.from_numpy(_per_channel(z, lambda c: restoration.denoise_tv_chambolle(c, weight=weight)))[None]
    return x[0].numpy()
