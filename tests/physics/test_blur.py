"""The blur operator's maths: FFT = spatial circular convolution, adjointness, the data step."""
import numpy as np
import torch

from pipeline.generators.kernels import motion_kernel
from pipeline.physics.blur import BlurPhysics, blur, blur_adjoint, blur_spatial, psf2otf


def _kernel(rng, size=7) -> torch.Tensor:
    k = rng.random((size, size - 2))  # non-square, non-symmetric: catches flips and transposes
    return torch.from_numpy(k / k.sum())


def test_fft_blur_equals_spatial_circular_convolution(odd_image, rng):
    k = _kernel(rng)
    otf = psf2otf(k, odd_image.shape[-2:])
    assert torch.allclose(blur(odd_image, otf), blur_spatial(odd_image, k), atol=1e-10)


def test_motion_kernel_blur_matches_spatial(odd_image):
    k = torch.from_numpy(motion_kernel(np.random.default_rng(3), size=15).kernel).double()
    otf = psf2otf(k, odd_image.shape[-2:])
    assert torch.allclose(blur(odd_image, otf), blur_spatial(odd_image, k), atol=1e-10)


def test_adjoint(odd_image, rng):
    k = _kernel(rng)
    otf = psf2otf(k, odd_image.shape[-2:])
    y = torch.from_numpy(rng.random(odd_image.shape))
    lhs = (blur(odd_image, otf) * y).sum()
    rhs = (odd_image * blur_adjoint(y, otf)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * float(abs(lhs))


def test_data_step_solves_normal_equations(odd_image, rng):
    """z = argmin ||Az - y||^2 + rho||z - x||^2  <=>  (A^T A + rho I) z = A^T y + rho x."""
    k = _kernel(rng).float()
    x = odd_image.float()
    y = torch.from_numpy(rng.random(x.shape)).float()
    physics = BlurPhysics(y, k)
    for rho in (1e-3, 0.5, torch.tensor([0.01, 2.0])):
        z = physics.data_step(x, rho)
        r = rho.reshape(-1, 1, 1, 1) if isinstance(rho, torch.Tensor) else rho
        lhs = physics.A_adjoint(physics.A(z)) + r * z
        rhs = physics.A_adjoint(y) + r * x
        assert torch.allclose(lhs, rhs, atol=2e-5), float((lhs - rhs).abs().max())


def test_data_step_inverts_noise_free_blur(odd_image, rng):
    k = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]])  # invertible (no zero in its OTF)
    x = odd_image.float()
    physics = BlurPhysics(blur(x, psf2otf(k, x.shape[-2:])), k)
    z = physics.data_step(torch.zeros_like(x), 1e-9)
    assert torch.allclose(z, x, atol=1e-4)


def test_kernel_larger_than_image_is_refused():
    try:
        psf2otf(torch.ones(9, 9) / 81, (5, 40))
    except ValueError as exc:
        assert "larger than the image" in str(exc)
    else:
        raise AssertionError("expected a ValueError")
