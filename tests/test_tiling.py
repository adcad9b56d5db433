"""The enhance library: tiles, the tiled restoration against the untiled one, the packaged model,
activation checkpointing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.enhance import (conv_radius, deblur, deblur_channels, guidance_images, plan_tiles, probe_image,
                              proxy_radius)
from pipeline.io import write_image
from pipeline.models.factory import build_model
from pipeline.models.packaged import PackagedDeblur, psf_image
from pipeline.physics.blur import BlurPhysics, psf2otf
from pipeline.tiling import blend_ramp, tile_spans, tiled_apply

# Tiled and untiled restorations differ only by float summation order in the convolutions.
TILE_TOLERANCE = 1e-5
TINY = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(TINY, 1).eval()


def blurred(rng: np.random.Generator, shape: tuple[int, ...], kernel: np.ndarray, noise: float = 0.02) -> torch.Tensor:
    """A smooth random scene ``shape (B, C, H, W)`` blurred by ``kernel`` plus white noise."""
    x = torch.from_numpy(rng.random(shape, dtype=np.float32))
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    y = BlurPhysics(x, torch.from_numpy(kernel)).A(x)
    return (y + noise * torch.from_numpy(rng.standard_normal(shape).astype(np.float32))).float()


@pytest.fixture
def kernel(rng) -> np.ndarray:
    k = rng.random((7, 5)).astype(np.float32)
    return k / k.sum()


@pytest.mark.parametrize("length,tile,blend,align", [(100, 40, 8, 1), (101, 40, 8, 2), (40, 40, 8, 1), (81, 30, 0, 2)])
def test_tile_spans_cover_with_overlap(length, tile, blend, align):
    spans = tile_spans(length, tile, blend, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert b0 % align == 0 and b0 > a0 and a1 - b0 >= blend  # overlap at least the blend
    assert all(b - a <= tile + align - 1 for a, b in spans)


def test_blend_ramps_sum_to_one_where_they_meet():
    left, right = blend_ramp(0, 40, 72, 8), blend_ramp(32, 72, 72, 8)
    assert torch.allclose(left[32:] + right[:8], torch.ones(8))
    assert (left > 0).all() and (right > 0).all() and left[0] == 1 and right[-1] == 1


def test_tiled_conv_net_equals_untiled_with_halo_of_its_receptive_field(tiny_model, rng):
    z = torch.from_numpy(rng.random((2, 1, 75, 69), dtype=np.float32))
    g = torch.full((2, 1, 75, 69), 0.05)
    with torch.no_grad():
        ref = tiny_model.denoiser(z, g)
        out = tiled_apply(tiny_model.denoiser, [z, g], tile=32, halo=conv_radius(tiny_model.denoiser), blend=8)
        short = tiled_apply(tiny_model.denoiser, [z, g], tile=32, halo=1, blend=8)
    assert (out - ref).abs().max() < TILE_TOLERANCE
    assert (short - ref).abs().max() > 10 * TILE_TOLERANCE  # the halo is what makes it exact


def test_tiled_proxy_equals_untiled_on_even_grid(tiny_model, rng):
    y = torch.from_numpy(rng.random((1, 1, 90, 84), dtype=np.float32))
    with torch.no_grad():
        out = tiled_apply(tiny_model.proxy, [y], tile=40, halo=proxy_radius(tiny_model.proxy), blend=8, align=2)
        assert (out - tiny_model.proxy(y)).abs().max() < TILE_TOLERANCE


@pytest.mark.parametrize("shape", [(1, 1, 113, 112), (1, 1, 115, 117)])
def test_tiled_enhancement_agrees_with_untiled_just_over_the_tile_size(tiny_model, rng, kernel, shape):
    halo = max(conv_radius(tiny_model.denoiser), proxy_radius(tiny_model.proxy))
    budget = (64 + 2 * halo) ** 2  # 112^2 pixels: 64-pixel tiles, each seen with its halo
    plan = plan_tiles(tiny_model, shape[-2:], budget)
    assert plan.tile == 64 and shape[-1] * shape[-2] > budget  # just over the budget: 2x2 tiles
    y = blurred(rng, shape, kernel)
    k = torch.from_numpy(kernel)
    ref, tiled = deblur(tiny_model, y, k), deblur(tiny_model, y, k, max_pixels=budget)
    assert (tiled.x - ref.x).abs().max() < TILE_TOLERANCE
    assert (tiled.noise_map - ref.noise_map).abs().max() < TILE_TOLERANCE


def test_untiled_enhancement_is_the_model_on_even_sizes(tiny_model, rng, kernel):
    y = blurred(rng, (2, 1, 48, 40), kernel)
    k = torch.from_numpy(kernel)
    with torch.no_grad():
        ref = tiny_model(BlurPhysics(y, k)).x
    assert torch.allclose(deblur(tiny_model, y, k).x, ref, atol=1e-6)


def test_budget_too_small_for_a_tile_is_refused(tiny_model):
    with pytest.raises(ValueError, match="no room for a tile"):
        plan_tiles(tiny_model, (500, 500), 50 * 50)


def test_colour_with_a_grey_model_is_restored_channel_by_channel(tiny_model, rng, kernel):
    y = blurred(rng, (1, 3, 40, 36), kernel)[0]
    k = torch.from_numpy(kernel)
    x, noise = deblur_channels(tiny_model, y, k)
    assert x.shape == (3, 40, 36) and noise.shape == (3, 40, 36)
    assert torch.allclose(x[1], deblur(tiny_model, y[1:2][None], k).x[0, 0], atol=1e-6)


def test_psf_image_has_the_kernels_transfer_function(kernel):
    k = torch.from_numpy(kernel)
    for shape in ((20, 18), (21, 17)):
        assert torch.allclose(psf2otf(psf_image(k, shape), shape), psf2otf(k, shape), atol=1e-6)


def test_packaged_model_equals_enhancement(tiny_model, rng, kernel):
    y = blurred(rng, (2, 1, 32, 30), kernel)
    k = torch.from_numpy(kernel)
    inp = torch.cat([y, psf_image(k, (32, 30)).expand(2, 1, 32, 30)], dim=1)
    with torch.no_grad():
        assert torch.allclose(PackagedDeblur(tiny_model)(inp), deblur(tiny_model, y, k).x, atol=1e-6)


def test_activation_checkpointing_gives_the_same_gradients(rng, kernel):
    torch.manual_seed(0)
    model = build_model(TINY, 1)
    y = blurred(rng, (2, 1, 32, 32), kernel)
    grads = []
    for ckpt in (False, True):
        model.activation_checkpointing = ckpt
        model.zero_grad()
        model(BlurPhysics(y, torch.from_numpy(kernel))).x.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bits,suffix,colour", [(8, ".png", False), (16, ".png", True), (16, ".tif", False),
                                                 (8, ".jpg", True)])
def test_probe_image_reads_depth_and_colour(tmp_path, rng, bits, suffix, colour):
    img = rng.random((12, 10, 3) if colour else (12, 10))
    write_image(tmp_path / f"a{suffix}", img, bits=bits)
    fmt = probe_image(tmp_path / f"a{suffix}")
    assert (fmt.bits, fmt.colour) == (bits, colour)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_on_cuda_costs_no_accuracy(tiny_model, rng, kernel):
    """bfloat16 convolutions, float32 FFT data steps: the PSNR against the clean image moves by
    less than 0.1 dB (measured, not assumed: the enhance command enables autocast on CUDA)."""
    import copy

    from pipeline.metrics import psnr

    model = copy.deepcopy(tiny_model).cuda()
    x = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 1, 128, 120), dtype=np.float32)), 5, 1, 2)
    k = torch.from_numpy(kernel)
    y = (BlurPhysics(x, k).A(x) + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).cuda()
    full = deblur(model, y, k.cuda(), amp=False).x[0, 0].cpu().numpy()
    mixed = deblur(model, y, k.cuda(), amp=True).x[0, 0].cpu().numpy()
    gt = x[0, 0].numpy()
    assert abs(psnr(mixed, gt, 3) - psnr(full, gt, 3)) < 0.1


def test_guidance_images_keep_dehazes_sign_and_clip_the_others():
    maps = np.array([[[-0.5], [0.0], [2.0]]], np.float32)  # (H, W, C') = (1, 3, 1)
    shown, exact = guidance_images(maps, "dehaze")
    assert shown[0, 1, 0] == 0.5 and shown[0, 0, 0] < 0.5 < shown[0, 2, 0] <= 1.0  # 0 as mid-grey
    assert np.array_equal(exact, maps) and exact.dtype == np.float32
    shown, exact = guidance_images(maps, "derain")
    assert np.array_equal(shown, exact) and exact.tolist() == [[[0.0], [0.0], [1.0]]]
