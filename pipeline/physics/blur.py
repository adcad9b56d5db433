"""Uniform blur with circular boundaries: ``y = k * x`` (+ noise, see :mod:`.noise`).

All operators work in the Fourier domain: with circular boundaries the blur is diagonalised by
the 2-D DFT, ``F(k * x) = K . F(x)`` where ``K = psf2otf(k)``. The HQS data step

    z = argmin_z ||k * z - y||^2 + rho ||z - x||^2 = F^-1[(conj(K) F(y) + rho F(x)) / (|K|^2 + rho)]

is then exact and costs two FFTs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psf2otf(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Optical transfer function of a centred kernel for images of ``shape``.

    Args:
        kernel: ``(kh, kw)`` or ``(B, kh, kw)``, the kernel's centre at ``(kh // 2, kw // 2)``.
        shape: ``(H, W)``, each at least the kernel's size.
    Returns:
        complex ``(B, 1, H, W)`` (``B = 1`` for a single kernel).
    """
    if kernel.dim() == 2:
        kernel = kernel[None]
    b, kh, kw = kernel.shape
    h, w = shape
    if kh > h or kw > w:
        raise ValueError(f"kernel of size {kh}x{kw} is larger than the image ({h}x{w})")
    padded = kernel.new_zeros(b, h, w)
    padded[:, :kh, :kw] = kernel
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fft2(padded)[:, None]


def blur(x: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """``A x``: circular convolution. ``x (B, C, H, W)``, ``otf (B or 1, 1, H, W)`` -> ``(B, C, H, W)``."""
    return torch.fft.ifft2(torch.fft.fft2(x) * otf).real


def blur_adjoint(y: torch.Tensor, otf: torch.Tensor) -> torch.Tensor:
    """``A^T y``: circular correlation with the same kernel. Shapes as :func:`blur`."""
    return torch.fft.ifft2(torch.fft.fft2(y) * otf.conj()).real


def blur_spatial(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Reference implementation of :func:`blur` in the spatial domain (for tests and checks).

    ``x (B, C, H, W)``, ``kernel (kh, kw)`` -> ``(B, C, H, W)``; a true convolution (kernel
    flipped), circular padding.
    """
    kh, kw = kernel.shape
    c = x.shape[1]
    # conv2d correlates; flipping makes it a convolution. Padding puts the kernel centre at kh // 2.
    weight = torch.flip(kernel, dims=(0, 1)).to(x)[None, None].expand(c, 1, kh, kw)
    pad = ((kw - 1) - kw // 2, kw // 2, (kh - 1) - kh // 2, kh // 2)
    return F.conv2d(F.pad(x, pad, mode="circular"), weight, groups=c)


class BlurPhysics:
    """The deblurring operator bound to one batch of observations.

    Holds what every stage reuses (the OTF, ``conj(K) F(y)``, ``|K|^2``) so the unfolded model
    pays for them once. The interface (``init``, ``data_step``) is what the unfolded model
    asks of any task's physics.

    Args:
        y: observations ``(B, C, H, W)``.
        kernel: ``(B, kh, kw)`` (or ``(kh, kw)`` shared by the batch), centred, sums to 1.
    """

    def __init__(self, y: torch.Tensor, kernel: torch.Tensor | None = None, otf: torch.Tensor | None = None):
        # float32 at least (half-precision FFTs lose too much); float64 kept for gradient checks
        self.dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        if otf is None:
            if kernel is None:
                raise ValueError("BlurPhysics needs a kernel or an OTF")
            otf = psf2otf(kernel.to(y.device, self.dtype), tuple(y.shape[-2:]))
        self.y = y.to(self.dtype)
        self.otf = otf
        self.otf_sq = otf.abs() ** 2
        self.fky = otf.conj() * torch.fft.fft2(self.y)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return blur(x, self.otf)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return blur_adjoint(y, self.otf)

    def init(self) -> torch.Tensor:
        """The starting point ``x_0`` of the unfolded iterations: the observation itself."""
        return self.y

    def data_step(self, x: torch.Tensor, rho: torch.Tensor | float) -> torch.Tensor:
        """Closed-form ``argmin_z ||A z - y||^2 + rho ||z - x||^2``.

        ``x (B, C, H, W)``; ``rho`` a float or a tensor broadcastable to ``(B, 1, 1, 1)``.
        Runs in float32 (or float64) whatever the autocast state.
        """
        if isinstance(rho, torch.Tensor):
            rho = rho.to(self.dtype).reshape(-1, 1, 1, 1)
        num = self.fky + rho * torch.fft.fft2(x.to(self.dtype))
        return torch.fft.ifft2(num / (self.otf_sq + rho)).real
