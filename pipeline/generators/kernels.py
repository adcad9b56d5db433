"""Blur kernels generated in code: camera-shake motion kernels and Gaussian kernels.

Motion kernels follow the recipe of USRNet/DPIR (``blurkernel_synthesis``): a camera path is a
random 3-D walk with slowly drifting rotation, projected on the sensor plane, rasterised with
bilinear weights, lightly smoothed and normalised. Every function takes an explicit
``numpy.random.Generator``; nothing reads global random state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class KernelSample:
    """One drawn kernel and the parameters that made it (recorded per sample)."""

    kernel: np.ndarray  # (k, k) float32, non-negative, sums to 1
    kind: str  # "motion", "gaussian_iso", "gaussian_aniso" or "file"
    params: dict


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_trajectory(rng: np.random.Generator, steps: int = 250) -> np.ndarray:
    """A random 3-D camera path ``(3, steps)``: velocity and rotation driven by decaying impulses."""
    x = np.zeros((3, steps))
    v = rng.standard_normal((3, steps))
    r = np.zeros((3, steps))
    rot_rate = 2 * np.pi / steps
    for t in range(1, steps):
        f_rot = rng.standard_normal(3) / (t + 1) + r[:, t - 1]
        f_trans = rng.standard_normal(3) / (t + 1)
        r[:, t] = r[:, t - 1] + rot_rate * f_rot
        v[:, t] = v[:, t - 1] + f_trans
        x[:, t] = x[:, t - 1] + _rotation(r[:, t]) @ v[:, t]
    return x


def rasterise(points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splat of 2-D points ``(2, N)`` (centred, in pixels) on a ``size x size`` grid."""
    k = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    px, py = points[0] + c, points[1] + c
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(k, (yi[ok], xi[ok]), w[ok])
    return k


def motion_kernel(rng: np.random.Generator, size: int = 25, steps: int = 250) -> KernelSample:
    """A camera-shake kernel of ``size x size`` (odd) whose blur extent is drawn at random."""
    path = random_trajectory(rng, steps)
    # Perspective projection of the path, a random focal length sets the depth effect.
    depth = 1.0 + 0.2 * rng.uniform()
    xy = path[:2] / (depth + 0.05 * (path[2] - path[2].mean()) / (np.abs(path[2]).max() + 1e-8))[None]
    xy = xy - xy.mean(axis=1, keepdims=True)
    extent = float(rng.uniform(0.25, 0.9)) * (size - 3)  # pixels spanned by the path
    span = np.abs(xy).max() + 1e-8
    xy = xy * (extent / 2) / span
    k = rasterise(xy, size)
    k = ndimage.gaussian_filter(k, sigma=0.5)
    k = centre_of_mass_align(k)
    k = k / k.sum()
    return KernelSample(k.astype(np.float32), "motion", {"size": size, "extent": round(extent, 3)})


def centre_of_mass_align(k: np.ndarray) -> np.ndarray:
    """Shift a kernel by whole pixels so its centre of mass sits at the centre pixel."""
    cy, cx = ndimage.center_of_mass(k)
    c = k.shape[0] // 2
    return ndimage.shift(k, (round(c - cy), round(c - cx)), order=0, mode="constant")


def gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, size: int) -> np.ndarray:
    """Anisotropic Gaussian kernel ``(size, size)``, rotated by ``theta`` radians, sum 1."""
    c = size // 2
    yy, xx = np.mgrid[-c : size - c, -c : size - c].astype(np.float64)
    cos, sin = np.cos(theta), np.sin(theta)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def random_gaussian_kernel(rng: np.random.Generator, max_size: int = 25) -> KernelSample:
    """Isotropic (half the draws) or anisotropic Gaussian kernel with a random width."""
    if rng.uniform() < 0.5:
        s = float(rng.uniform(0.7, 2.5))
        sx, sy, theta, kind = s, s, 0.0, "gaussian_iso"
    else:
        sx, sy = float(rng.uniform(0.7, 3.0)), float(rng.uniform(0.7, 3.0))
        theta, kind = float(rng.uniform(0, np.pi)), "gaussian_aniso"
    size = int(min(max_size, 2 * int(np.ceil(3 * max(sx, sy))) + 1))
    params = {"size": size, "sigma_x": round(sx, 4), "sigma_y": round(sy, 4), "theta": round(theta, 4)}
    return KernelSample(gaussian_kernel(sx, sy, theta, size), kind, params)


def sample_kernel(rng: np.random.Generator, motion_fraction: float = 0.6, max_size: int = 25) -> KernelSample:
    """One kernel from the generated mixture (motion with probability ``motion_fraction``)."""
    if rng.uniform() < motion_fraction:
        return motion_kernel(rng, size=max_size)
    return random_gaussian_kernel(rng, max_size=max_size)


def pad_to(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a centred ``(kh, kw)`` kernel to ``(size, size)``, keeping its centre pixel centred."""
    kh, kw = kernel.shape
    if kh > size or kw > size:
        raise ValueError(f"kernel {kh}x{kw} does not fit in {size}x{size}")
    out = np.zeros((size, size), dtype=np.float32)
    top, left = size // 2 - kh // 2, size // 2 - kw // 2
    out[top : top + kh, left : left + kw] = kernel
    return out
