"""Image quality metrics: thin wrappers over ``skimage.metrics`` with an explicit border crop."""
from __future__ import annotations

import numpy as np
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _prepare(x: np.ndarray, gt: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, C)`` or ``(H, W)`` pair, clipped to [0, 1] and cropped by ``crop`` pixels per side."""
    if x.shape != gt.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {gt.shape}")
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    gt = np.asarray(gt, dtype=np.float64)
    if crop > 0:
        if 2 * crop >= min(x.shape[:2]):
            raise ValueError(f"crop {crop} leaves nothing of a {x.shape[0]}x{x.shape[1]} image")
        x, gt = x[crop:-crop, crop:-crop], gt[crop:-crop, crop:-crop]
    return x, gt


# Identical images have an MSE of 0 and a PSNR of +inf, which would make every mean over samples
# infinite and cannot be written as JSON; identical pairs happen in real data (an unchanged crop).
# 100 dB is an MSE of 1e-10, far below 16-bit quantisation (about 1e-11 is already ~110 dB).
PSNR_CAP_DB = 100.0


def psnr(x: np.ndarray, gt: np.ndarray, crop: int = 0) -> float:
    """PSNR in dB of ``x`` against ``gt`` (both ``(H, W[, C])`` in [0, 1]; ``x`` clipped), at most
    :data:`PSNR_CAP_DB` (reached by identical images)."""
    x, gt = _prepare(x, gt, crop)
    if np.array_equal(x, gt):  # skimage would divide by an MSE of 0
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(gt, x, data_range=1.0)), PSNR_CAP_DB)


def ssim(x: np.ndarray, gt: np.ndarray, crop: int = 0) -> float:
    """SSIM (Wang et al. 2004, Gaussian window as in the paper's protocol) on ``(H, W[, C])``."""
    x, gt = _prepare(x, gt, crop)
    channel_axis = -1 if x.ndim == 3 and x.shape[-1] > 1 else None
    if x.ndim == 3 and channel_axis is None:
        x, gt = x[..., 0], gt[..., 0]
    return float(structural_similarity(gt, x, data_range=1.0, channel_axis=channel_axis,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def luminance(img: np.ndarray) -> np.ndarray:
    """The ITU-R BT.601 luma ``Y`` of an ``(H, W, 3)`` RGB image in [0, 1], in [16, 235] / 255: the
    channel on which the rain and haze literature reports PSNR/SSIM (MATLAB's ``rgb2ycbcr``)."""
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"luminance needs an (H, W, 3) RGB image, got {img.shape}")
    return rgb2ycbcr(np.clip(img, 0.0, 1.0))[..., 0] / 255.0


def kernel_crop(kernel_shape: tuple[int, int]) -> int:
    """Border excluded from the metrics for a kernel: its half-size."""
    return max(kernel_shape) // 2
