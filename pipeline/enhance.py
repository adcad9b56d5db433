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

The command's per-file work is here too (``stages.enhance`` parses flags, fetches an MLflow model
and logs): the input/output pairs of a file or folder, the kernel chosen from a file, the model
checked for the task, one image read, restored and written back in its own format. Its errors
name the command's flags (they are what the user typed).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import nn

from pipeline import io
from pipeline.checkpoint import load_model
from pipeline.data import chw_to_hwc, hwc_to_chw
from pipeline.device import autocast
from pipeline.models.packaged import Enhanced, unfolded
from pipeline.models.task_models import Observation
from pipeline.models.unfolded import UnfoldedHQS
from pipeline.physics.blur import BlurPhysics
from pipeline.physics.haze import CORRECTION_LIMIT
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


def restore_image(model: nn.Module, img: np.ndarray, kernel: np.ndarray | None, device: torch.device, *,
                  task: str, max_megapixels: float, blend: int = DEFAULT_BLEND, amp: bool = True,
                  kernel_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Restore one image ``img (H, W, C)`` (``C`` 1 or 3, in [0, 1]) on ``device``: deblurred by
    ``kernel (kh, kw)`` (:func:`deblur_channels`, tiled past ``max_megapixels``, 0: never), or,
    ``kernel`` None, by a rain / haze model (:func:`restore_blind`, refused past ``max_megapixels``).

    Returns the restored image ``(H, W, C)`` clipped to [0, 1] and the proxy's maps ``(H, W, C')``
    float32 (the guidance's source, see :func:`guidance_images`). ValueError, naming the
    command's flags, for an image the model cannot restore as asked.
    """
    h, w = img.shape[:2]
    max_pixels = int(max_megapixels * 1e6) if max_megapixels > 0 else None
    y = torch.from_numpy(hwc_to_chw(img)).to(device)
    if kernel is None:
        if max_pixels is not None and h * w > max_pixels:
            raise ValueError(f"{h}x{w} is over --max-megapixels {max_megapixels:g}; the {task}"
                             " model runs untiled (raise --max-megapixels, or 0 for no limit)")
        x, maps = restore_blind(model, y, amp=amp)
    else:
        kh, kw = kernel.shape
        if kh > h or kw > w:
            raise ValueError(f"the kernel {kernel_id} ({kh}x{kw}) is larger than the image ({h}x{w})")
        # a budget too small for one tile, a channel mismatch: ValueError from here
        x, maps = deblur_channels(model, y, torch.from_numpy(kernel).to(device), max_pixels, blend, amp=amp)
    return np.clip(chw_to_hwc(x.cpu().numpy()), 0.0, 1.0), chw_to_hwc(maps.float().cpu().numpy()).astype(np.float32)


def guidance_images(maps: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(shown, exact)`` of the proxy's maps ``(H, W, C')`` of :func:`restore_image`: the values of
    the 16-bit guidance PNG, in [0, 1], and the float32 array of its ``.npy`` twin.

    A noise level or rain density is shown as it is (clipped to [0, 1] in both); dehaze's map is
    signed (``log(t / t_dcp)`` within ``+-CORRECTION_LIMIT``), so its PNG shows 0 as mid-grey and
    its array keeps the sign.
    """
    if task == "dehaze":
        return np.clip(0.5 + maps / (2 * CORRECTION_LIMIT), 0.0, 1.0), maps
    return np.clip(maps, 0.0, 1.0), np.clip(maps, 0.0, 1.0)


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


def read_input(path: Path) -> tuple[np.ndarray, np.ndarray | None, ImageFormat]:
    """``(img (H, W, C), alpha (H, W) or None, format)`` of an image file: ``C`` 3 for colour, 1 for
    grey (a grey file is read replicated, that is undone here). InputError for an unreadable file
    or float values outside [0, 1]."""
    img, alpha = io.read_image_with_alpha(path, gray=False)
    fmt = probe_image(path)
    return (img if fmt.colour else img[..., :1]), alpha, fmt


def write_restored(dst: Path, out: np.ndarray, alpha: np.ndarray | None, fmt: ImageFormat,
                   maps: np.ndarray | None = None, task: str = "deblur") -> None:
    """Write ``out (H, W, C)`` to ``dst`` (atomically) in the input's bit depth as far as ``dst``'s
    format holds it, ``alpha`` passed through where it holds one; with ``maps`` (of
    :func:`restore_image`) also ``<stem>_guidance.png`` and ``<stem>_guidance.npy``
    (:func:`guidance_images`). InputError when a file cannot be written."""
    suffix = dst.suffix.lower()
    try:
        io.write_image(dst, out, bits=output_bits(fmt, suffix), alpha=alpha if suffix in io.ALPHA_SUFFIXES else None)
        if maps is not None:
            base = dst.with_name(f"{dst.stem}_guidance")
            shown, exact = guidance_images(maps, task)
            io.write_image(base.with_suffix(".png"), shown, bits=16)
            with io.atomic_path(base.with_suffix(".npy")) as tmp:
                np.save(tmp, exact)
    except OSError as exc:
        raise io.InputError(f"cannot write {dst}: {exc.strerror or exc}") from exc


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


# --------------------------------------------------------------------------- the command's inputs


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def plan_jobs(inp: Path, out: Path) -> list[Job]:
    """``(input, output)`` pairs: one file, or every image under a folder mirrored under ``out``."""
    if not inp.exists():
        raise io.InputError(f"--in {inp}: no such file or folder")
    if inp.is_file():
        if inp.suffix.lower() not in io.IMAGE_SUFFIXES:
            raise io.InputError(f"--in {inp}: not an image ({', '.join(io.IMAGE_SUFFIXES)})")
        dst = out if out.suffix.lower() in io.IMAGE_SUFFIXES and not out.is_dir() else out / inp.name
        if dst.resolve() == inp.resolve():
            raise io.InputError(f"--out {dst} is the input itself: choose another path")
        return [Job(inp, dst)]
    if out.resolve() == inp.resolve():
        raise io.InputError(f"--out {out} is the input folder: choose another folder")
    out_abs = out.resolve()
    files = sorted(f for f in inp.rglob("*") if f.is_file() and f.suffix.lower() in io.IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(inp).parts)  # temporaries, ._ forks
                   and out_abs not in f.resolve().parents)  # an --out inside --in is not input
    if not files:
        raise io.InputError(f"no images ({', '.join(io.IMAGE_SUFFIXES)}) under {inp}")
    return [Job(f, out / f.relative_to(inp)) for f in files]


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it: refuse an unwritable output up front."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise io.InputError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


def select_kernel(task: str, path: str | None, index: int) -> tuple[str, np.ndarray | None]:
    """``(id, kernel (kh, kw))`` of the blur to undo: kernel ``index`` (1-based; 0 when the file
    holds one) of the file ``path``; ``("", None)`` for rain and haze, which take none."""
    if task != "deblur":
        if path:
            raise io.InputError(f"--kernel is for --task deblur: the {task} model estimates the degradation itself")
        return "", None
    if not path:
        raise io.InputError("--task deblur needs --kernel FILE (the blur to undo)")
    kernels = io.read_kernels(path)
    if len(kernels) > 1 and index == 0:
        ids = ", ".join(k for k, _ in kernels[:10]) + (" ..." if len(kernels) > 10 else "")
        raise io.InputError(f"{path} holds {len(kernels)} kernels ({ids}): choose one with --kernel-index 1..{len(kernels)}")
    if index > len(kernels) or index < 0:
        raise io.InputError(f"--kernel-index {index}: {path} holds {len(kernels)} kernel(s)")
    return kernels[max(index, 1) - 1]


def load_task_model(path: Path, ref: str, task: str, device: torch.device) -> nn.Module:
    """The model of the checkpoint ``path`` (``ref``: what the user named) on ``device``; refused
    when it was trained for another task, or needs the true noise map (guidance 'oracle')."""
    model, _, state = load_model(path, task=None, device=device)
    if state["task"] != task:
        raise io.InputError(f"{ref}: a model for task '{state['task']}', not '{task}'")
    if model.guidance_mode == "oracle":
        raise io.InputError(f"{ref}: a model with guidance 'oracle' needs the true noise map; it cannot restore photos")
    return model


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
