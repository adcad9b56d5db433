"""Apply a trained model to real images of any size (the library side of ``stages.enhance``).

Large images: the FFT data step runs on the **whole image** (exact, with the circular boundary
the model was trained with: tiling it would need padding and change the result near every tile
border), and only the networks — the proxy once, the denoiser at every stage — run in
overlapping tiles (:mod:`pipeline.tiling`) with a halo at least their receptive-field radius,
so the tiled result equals the untiled one up to float rounding. Memory then is a fixed number
of bytes per pixel for the whole-image FFT state plus one tile's activations, instead of the
networks' ``width`` feature maps over the whole image.

Colour with a grey model: each channel is restored on its own (its own noise estimate and
penalties), one after the other so that peak memory is that of one channel. A colour model on a
grey image sees the grey channel replicated, and its output is averaged back to grey.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import io
from pipeline.device import autocast
from pipeline.models.task_models import Observation
from pipeline.models.unfolded import UnfoldedHQS, constant_maps, hqs
from pipeline.physics.blur import BlurPhysics
from pipeline.tiling import Tiled

TASKS = ("deblur", "derain", "dehaze")
DEFAULT_BLEND = 16


def conv_radius(module: nn.Module) -> int:
    """Receptive-field radius (pixels) of a stack of stride-1 convolutions: ``sum d * (k // 2)``."""
    return sum(m.dilation[0] * (m.kernel_size[0] // 2) for m in module.modules() if isinstance(m, nn.Conv2d))


def proxy_radius(proxy: nn.Module) -> int:
    """Receptive-field radius (full-resolution pixels) of :class:`GuidanceProxy`: the Haar band
    (2x2, stride 2), the local-energy window and the dilated body at half resolution, and the
    bilinear upsampling (one half-resolution pixel), plus a 2-pixel margin."""
    return 2 * (proxy.window // 2 + conv_radius(proxy.body) + 1) + 2


@dataclass(frozen=True)
class TilePlan:
    """How the networks are tiled: output tiles of ``tile`` pixels, each network call sees at
    most ``(tile + 2 * halo)^2`` pixels; ``None`` tile: untiled."""

    tile: int | None
    denoiser_halo: int
    proxy_halo: int
    blend: int = DEFAULT_BLEND


def plan_tiles(model: UnfoldedHQS, shape: tuple[int, int], max_pixels: int | None, blend: int = DEFAULT_BLEND) -> TilePlan:
    """Tile the networks when ``H * W`` exceeds ``max_pixels`` (``None``: never).

    The tile side is chosen so that one extended tile ``(tile + 2 * halo)^2`` stays within
    ``max_pixels``; raises ValueError when the budget leaves no room for a tile.
    """
    d_halo, p_halo = conv_radius(model.denoiser), proxy_radius(model.proxy)
    h, w = shape
    if max_pixels is None or h * w <= max_pixels:
        return TilePlan(None, d_halo, p_halo, blend)
    halo = max(d_halo, p_halo)
    tile = (int(math.isqrt(int(max_pixels))) - 2 * halo) // 2 * 2  # even: the proxy's stride-2 grid
    if tile < max(4 * blend, 32):
        raise ValueError(f"a budget of {max_pixels} pixels leaves no room for a tile (halo {halo}, blend {blend})")
    return TilePlan(tile, d_halo, p_halo, blend)


def tiled_networks(model: UnfoldedHQS, plan: TilePlan) -> tuple[nn.Module, nn.Module]:
    """``(denoiser, proxy)`` of ``model``, wrapped in :class:`Tiled` when ``plan`` tiles."""
    if plan.tile is None:
        return model.denoiser, model.proxy
    return (Tiled(model.denoiser, plan.tile, plan.denoiser_halo, plan.blend),
            Tiled(model.proxy, plan.tile, plan.proxy_halo, plan.blend, align=2))


def even_sized(proxy: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The proxy on ``y (B, C, H, W)`` replicate-padded to even ``H, W``, cropped back: ``(B, 1, H, W)``.

    The proxy samples a stride-2 Haar band and upsamples by 2. On an odd size its own padding
    makes the upsampling factor ``ceil(H/2) / H`` instead of 1/2, a sub-pixel drift across the
    image that tiles cannot reproduce; on an even size (as in training) every tile sees the
    same grid as the whole image, so tiled and untiled maps agree.
    """
    h, w = y.shape[-2:]
    # no branch on the parity: the packaged model is exported with symbolic sizes
    return proxy(F.pad(y, (0, w % 2, 0, h % 2), mode="replicate"))[..., :h, :w]


@dataclass
class Enhanced:
    x: torch.Tensor  # (B, C, H, W) the restored image, float32, not clipped
    noise_map: torch.Tensor  # (B, 1, H, W) the proxy's noise-level map ([0, 1] units): the guidance's source


def unfolded(model: UnfoldedHQS, denoiser: nn.Module, proxy: nn.Module, physics: BlurPhysics) -> Enhanced:
    """The model's forward pass with its networks replaced (e.g. by tiled ones), the proxy run
    through :func:`even_sized`. ``physics`` bound to ``y (B, C, H, W)``."""
    if model.guidance_mode == "oracle":
        raise ValueError("a model with guidance 'oracle' needs the true noise map: it cannot restore real images")
    if model.guidance_mode == "none":
        out = hqs(physics, denoiser, model.penalties(None), constant_maps(model.nominal_sigmas))
        return Enhanced(out.x.float(), out.guidance[-1].float())
    if getattr(model, "proxy_sharing", "once") != "once":
        # the stage proxies run on each z_k inside the model: not split into tiles here
        if denoiser is not model.denoiser:
            raise ValueError("tiling supports models with proxy_sharing 'once' only")
        out = model(physics)
        return Enhanced(out.x.float(), out.proxy_maps[0].float())
    level_map = even_sized(proxy, physics.init()).float()
    if getattr(model, "proxy_output", "map") == "scalar":
        level_map = level_map.mean(dim=(2, 3), keepdim=True).expand_as(level_map)
    rhos = model.penalties(level_map.flatten(1).mean(1), level_map)
    out = hqs(physics, denoiser, rhos, model.map_guidance(level_map))
    return Enhanced(out.x.float(), level_map)


@torch.no_grad()
def deblur(model: UnfoldedHQS, y: torch.Tensor, kernel: torch.Tensor, max_pixels: int | None = None,
           blend: int = DEFAULT_BLEND, amp: bool = True) -> Enhanced:
    """Restore ``y (B, C, H, W)`` (``C`` = the model's channels) blurred by ``kernel (kh, kw)``
    or ``(B, kh, kw)``, with the networks tiled past ``max_pixels`` pixels (see the module
    docstring). ``amp``: bfloat16 autocast for the networks on CUDA (the FFT data steps stay
    float32); no effect on CPU."""
    plan = plan_tiles(model, tuple(y.shape[-2:]), max_pixels, blend)
    denoiser, proxy = tiled_networks(model, plan)
    with autocast(y.device, amp):
        return unfolded(model, denoiser, proxy, BlurPhysics(y, kernel))


def deblur_channels(model: UnfoldedHQS, y: torch.Tensor, kernel: torch.Tensor, max_pixels: int | None = None,
                    blend: int = DEFAULT_BLEND, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One image ``y (C, H, W)`` whatever ``C`` (1 or 3) against the model's channels.

    Returns ``x (C, H, W)`` and the noise maps ``(C', H, W)`` (one per restored channel: ``C``
    with a grey model, 1 with a colour one).
    """
    c, m = y.shape[0], model.proxy.channels
    if c == m:
        res = deblur(model, y[None], kernel, max_pixels, blend, amp)
        return res.x[0], res.noise_map[0]
    if m == 1:
        # channel by channel rather than as a batch of C: peak memory stays that of one channel
        parts = [deblur(model, y[i:i + 1][None], kernel, max_pixels, blend, amp) for i in range(c)]
        return torch.cat([p.x[0] for p in parts]), torch.cat([p.noise_map[0] for p in parts])
    if c == 1:
        res = deblur(model, y.expand(m, -1, -1)[None], kernel, max_pixels, blend, amp)
        return res.x[0].mean(0, keepdim=True), res.noise_map[0]
    raise ValueError(f"cannot restore a {c}-channel image with a {m}-channel model")


@torch.no_grad()
def restore_blind(model: nn.Module, y: torch.Tensor, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rain or haze removal of one image ``y (C, H, W)`` by a task model, untiled (the dark
    channel prior's airlight is a whole-image estimate). Returns ``x (C, H, W)`` and the proxy's
    map ``(1, H, W)`` (the predicted density / transmission correction). A grey image is replicated to
    the model's channels and its output averaged back; a colour image with a grey model is
    restored channel by channel (maps averaged)."""
    c, m = y.shape[0], model.denoiser.channels
    with autocast(y.device, amp):
        if c == m:
            out = model(Observation(y[None]))
            return out.x[0].float(), out.proxy_maps[0][0].float()
        if c == 1:
            out = model(Observation(y.expand(m, -1, -1)[None]))
            return out.x[0].float().mean(0, keepdim=True), out.proxy_maps[0][0].float()
        if m == 1:
            outs = [model(Observation(y[i:i + 1][None])) for i in range(c)]
            return (torch.cat([o.x[0].float() for o in outs]),
                    torch.stack([o.proxy_maps[0][0].float() for o in outs]).mean(0))
    raise ValueError(f"cannot restore a {c}-channel image with a {m}-channel model")


def psf_image(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The kernel ``(kh, kw)`` as an image ``(H, W)`` with its centre ``(kh // 2, kw // 2)`` at
    ``(H // 2, W // 2)``: the same OTF as the kernel itself (:func:`psf2otf` of either), so a
    model can take the blur as one more image channel."""
    kh, kw = kernel.shape
    h, w = shape
    if kh > h or kw > w:
        raise ValueError(f"kernel of size {kh}x{kw} is larger than the image ({h}x{w})")
    out = kernel.new_zeros(h, w)
    r, c = h // 2 - kh // 2, w // 2 - kw // 2
    out[r:r + kh, c:c + kw] = kernel
    return out


class PackagedDeblur(nn.Module):
    """The model as MLflow's PyTorch flavour serves it (it passes one array to ``forward``).

    ``forward(inp (B, C + 1, H, W)) -> (B, C, H, W)``: channels ``0..C-1`` the observation,
    channel ``C`` the blur as :func:`psf_image` (centred, summing to 1). The computation of
    :func:`deblur`, untiled.
    """

    def __init__(self, model: UnfoldedHQS):
        super().__init__()
        self.model = model
        self.channels = model.proxy.channels

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        y, psf = inp[:, :self.channels], inp[:, self.channels]
        return unfolded(self.model, self.model.denoiser, self.model.proxy, BlurPhysics(y, psf)).x


# --------------------------------------------------------------------------- image files


@dataclass(frozen=True)
class ImageFormat:
    bits: int  # what the output keeps: 8 or 16 (integer levels) or 32 (float samples)
    colour: bool  # three channels stored (alpha not counted)


def probe_image(path: str | Path) -> ImageFormat:
    """Bit depth and colour of an image file, from its header (PNG) or its decoder's properties.

    Call after :func:`pipeline.io.read_image` succeeded (this does not report corrupt files).
    Float samples (TIFF) give 32, other integers wider than 8 bits 16; palette PNGs count as colour.
    """
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(33)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        depth, colour_type = head[24], head[25]
        return ImageFormat(16 if depth == 16 else 8, colour_type in (2, 3, 6))
    props = iio.improps(p)
    shape = tuple(props.shape)
    colour = len(shape) == 3 and shape[-1] >= 3
    bits = 32 if props.dtype.kind == "f" else 8 if props.dtype.itemsize == 1 else 16
    return ImageFormat(bits, colour)


def output_bits(fmt: ImageFormat, suffix: str) -> int:
    """The bit depth to write: the input's, as far as the output format holds it (floats: TIFF
    only, else 16-bit; JPEG and BMP: 8-bit only)."""
    suffix = suffix.lower()
    if suffix in io.FLOAT_SUFFIXES:
        return fmt.bits
    return min(fmt.bits, 16) if suffix == ".png" else 8


def round_trip_notes(fmt: ImageFormat, alpha: bool, suffix: str, model_channels: int) -> list[str]:
    """What restoring an image of ``fmt`` (with an ``alpha`` channel or not) with a model of
    ``model_channels`` channels and writing it as ``suffix`` does beyond a plain round trip, one
    phrase each; empty for a plain one."""
    suffix, bits = suffix.lower(), output_bits(fmt, suffix)
    notes = []
    if fmt.bits == 32:
        notes.append("float kept (float32)" if bits == 32 else f"float written as {bits}-bit ({suffix} holds no float)")
    elif bits < fmt.bits:
        notes.append(f"{fmt.bits}-bit written as {bits}-bit ({suffix} holds no more)")
    if alpha:
        notes.append("alpha passed through unchanged" if suffix in io.ALPHA_SUFFIXES
                     else f"alpha dropped ({suffix} holds none)")
    if fmt.colour and model_channels == 1:
        notes.append("colour restored channel by channel (grey model)")
    elif not fmt.colour and model_channels > 1:
        notes.append(f"grey replicated to the model's {model_channels} channels, its output averaged back")
    return notes


# Measured on CPU (benchmarks/scaling.py), with a margin: the whole-image state of the data step
# (spectra of y, the kernel and the iterate, complex64), the noise map, the K guidance maps and
# the tiles' accumulators, per pixel and channel; and the network activations per tile pixel and
# feature channel (a dilated convolution's input, output and im2col workspace).
WHOLE_IMAGE_BYTES_PER_PIXEL = 160
TILE_BYTES_PER_PIXEL_CHANNEL = 32
RUNTIME_BYTES = 32 * 2**20  # the runtime's first-call allocations (thread pools, FFT plans, caches)


def memory_budget(model: UnfoldedHQS, shape: tuple[int, int], max_pixels: int | None) -> int:
    """Peak working memory (bytes) :func:`deblur` may use on an ``(H, W)`` image with one
    channel: a constant, a part linear in the pixels for the exact whole-image data step, and
    one (extended) tile of network activations (the whole image when untiled)."""
    h, w = shape
    plan = plan_tiles(model, shape, max_pixels)
    halo = max(plan.denoiser_halo, plan.proxy_halo)
    net_pixels = h * w if plan.tile is None else min((plan.tile + 2 * halo + 1) ** 2, h * w)
    width = max(m.out_channels for m in model.denoiser.modules() if isinstance(m, nn.Conv2d))
    return RUNTIME_BYTES + WHOLE_IMAGE_BYTES_PER_PIXEL * h * w + TILE_BYTES_PER_PIXEL_CHANNEL * width * net_pixels
