"""Generators: reproducible by seed; kernels non-negative, normalised, centred; noise maps sane."""
import numpy as np
from scipy import ndimage

from pipeline.generators.kernels import gaussian_kernel, motion_kernel, pad_to, sample_kernel
from pipeline.generators.noise_maps import constant_map, smooth_map
from pipeline.generators.seeds import derive_seed
from pipeline.physics.noise import add_gaussian_noise


def _draw(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [sample_kernel(rng).kernel for _ in range(6)]


def test_same_seed_same_kernels():
    a, b, c = _draw(7), _draw(7), _draw(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, c))


def test_kernels_nonnegative_normalised_and_centred():
    rng = np.random.default_rng(0)
    for _ in range(40):
        s = sample_kernel(rng, motion_fraction=0.5, max_size=25)
        k = s.kernel
        assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.shape[0] <= 25
        assert (k >= 0).all() and np.isclose(k.sum(), 1.0, atol=1e-5)
        cy, cx = ndimage.center_of_mass(k)
        assert abs(cy - k.shape[0] // 2) <= 1.0 and abs(cx - k.shape[1] // 2) <= 1.0, s.params


def test_motion_kernels_are_not_degenerate():
    rng = np.random.default_rng(1)
    support = [(motion_kernel(rng, size=25).kernel > 1e-3).sum() for _ in range(10)]
    assert min(support) >= 3  # a path, not a single dot


def test_gaussian_kernel_anisotropy_and_rotation():
    k = gaussian_kernel(3.0, 1.0, 0.0, 15)
    assert k[7, :].sum() > k[:, 7].sum()  # wide along x
    assert np.allclose(gaussian_kernel(3.0, 1.0, np.pi / 2, 15), k.T, atol=1e-6)


def test_pad_to_keeps_centre():
    k = np.zeros((5, 5), np.float32)
    k[2, 2] = 1
    p = pad_to(k, 9)
    assert p.shape == (9, 9) and p[4, 4] == 1


def test_noise_maps():
    rng = np.random.default_rng(0)
    m = smooth_map(rng, (37, 29), 0.05, spread=0.8)
    assert m.shape == (1, 37, 29) and np.isclose(m.mean(), 0.05, rtol=0.25)
    assert m.min() >= 0.05 * 0.2 - 1e-6 and m.max() <= 0.05 * 1.8 + 1e-6 and m.std() > 0.002
    assert np.array_equal(smooth_map(np.random.default_rng(3), (20, 20), 0.03), smooth_map(np.random.default_rng(3), (20, 20), 0.03))
    assert (constant_map((4, 5), 0.03) == np.float32(0.03)).all()


def test_noise_has_the_requested_level():
    rng = np.random.default_rng(0)
    x = np.zeros((1, 256, 256), np.float32)
    y = add_gaussian_noise(x, constant_map((256, 256), 0.05), rng)
    assert abs(y.std() - 0.05) < 0.002


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1)
    assert derive_seed(0, "a", 1) != derive_seed(1, "a", 1) != derive_seed(0, "b", 1)
