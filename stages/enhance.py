"""Restore your own photos with a trained model.

    python -m stages.enhance --task deblur --kernel K --in PATH --out PATH [--model M] [options]
    python -m stages.enhance --task derain|dehaze --in PATH --out PATH [--model M] [options]

--in is one image (PNG, JPEG, TIFF, BMP; 8 or 16 bit, or float TIFF; grey or colour; with or
without alpha) or a folder, searched recursively and mirrored under --out (same relative paths,
same file formats). Each output keeps its input's bit depth (JPEG and BMP are 8-bit only) and
its colour: a grey model (the default one) restores a colour image channel by channel, each with
its own noise estimate. A float TIFF gives a float32 TIFF; float values outside [0, 1] (what the
models work in) are refused, never clipped. An alpha channel (a PNG's transparency included) is
not restored but passed through unchanged into a PNG or TIFF output; a JPEG or BMP output holds
none, so there it is dropped (and the log says so). Whatever is not a plain round trip (alpha
kept or dropped, float kept, fewer bits, channel by channel) gets one log line per file. Every
file is written atomically: an interrupted or failed run never leaves a half-written file. A bad
image in a folder is reported and skipped; the run then ends with exit code 2 listing the failures.

--model is a checkpoint file (models/<task>/model.pt, what `dvc repro` trains) or an MLflow model URI
(runs:/<run_id>/model, models:/hyperguide-deblur/<version>) from the store MLFLOW_TRACKING_URI
names (default sqlite:///mlflow.db). Either way the weights are read with
torch.load(weights_only=True): nothing is unpickled.

Large images: the FFT data step runs on the whole image (exact, circular boundary as in
training); the networks run in overlapping tiles, with a halo of their receptive field and
cosine blending, when the image has more than --max-megapixels (equal to the untiled result up
to float rounding; peak memory: about 100 bytes per pixel plus one tile).

--task derain and dehaze take no kernel: their models (trained by `dvc repro` with
base.task derain / dehaze) estimate the streaks / the transmission and airlight themselves.
They run on the whole image (the airlight is a whole-image estimate), so an image over
--max-megapixels is refused rather than tiled; --save-guidance writes the predicted rain
density / transmission correction map (log(t / t_dcp), signed).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import io
from pipeline.checkpoint import load_model
from pipeline.data import chw_to_hwc, hwc_to_chw
from pipeline.device import pick_device
from pipeline.physics.haze import CORRECTION_LIMIT
from pipeline.enhance import DEFAULT_BLEND, TASKS, deblur_channels, output_bits, probe_image, \
    restore_blind, round_trip_notes
from stages.common import fill_paths, log, run_main
from stages.tracking import fetch_checkpoint, is_model_uri


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stages.enhance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="deblur",
                   help="what to undo (default deblur; derain and dehaze need a model trained for them)")
    p.add_argument("--in", dest="inp", required=True, metavar="PATH", help="an image file or a folder of images")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output file (for one image; a folder or a name without image suffix: written inside it)"
                        " or folder (mirrors --in)")
    p.add_argument("--kernel", metavar="FILE",
                   help="the blur (deblur): .mat (v5/v7.3, variable 'kernels'), .npy, .npz or an image; centred,"
                        " normalised to sum 1")
    p.add_argument("--kernel-index", type=int, default=0, metavar="N",
                   help="which kernel (1-based) when the file holds several")
    p.add_argument("--model", default=None,
                   help="checkpoint file or MLflow model URI (runs:/<run_id>/model, models:/<name>/<version>);"
                        " default models/<task>/model.pt")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when present, else CPU")
    p.add_argument("--max-megapixels", type=float, default=1.0, metavar="MP",
                   help="run the networks in tiles on images larger than this (0: never tile); bounds the"
                        " networks' memory to about 0.5 GB per megapixel at the default width")
    p.add_argument("--blend", type=int, default=DEFAULT_BLEND, metavar="PX", help="overlap of neighbouring tiles")
    p.add_argument("--save-guidance", action="store_true",
                   help="also write the predicted noise-level map (the guidance's source) next to each output:"
                        " <name>_guidance.png (16-bit, value / 65535 = noise std in [0, 1] units, one channel per"
                        " restored channel; dehaze: the transmission correction log(t / t_dcp) as 0.5 + value / 6)"
                        " and <name>_guidance.npy (float32 (H, W, C), exact)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA (no effect on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    fill_paths(args, args.task, model="model")
    return args


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


def load_kernel(path: str | None, index: int) -> tuple[str, np.ndarray]:
    if not path:
        raise io.InputError("--task deblur needs --kernel FILE (the blur to undo)")
    kernels = io.read_kernels(path)
    if len(kernels) > 1 and index == 0:
        ids = ", ".join(k for k, _ in kernels[:10]) + (" ..." if len(kernels) > 10 else "")
        raise io.InputError(f"{path} holds {len(kernels)} kernels ({ids}): choose one with --kernel-index 1..{len(kernels)}")
    if index > len(kernels) or index < 0:
        raise io.InputError(f"--kernel-index {index}: {path} holds {len(kernels)} kernel(s)")
    return kernels[max(index, 1) - 1]


def load(ref: str, task: str, device: torch.device):
    """The model behind ``ref`` (checkpoint path or MLflow URI), refused for another task."""
    if is_model_uri(ref):
        with tempfile.TemporaryDirectory(prefix="hyperguide-model-") as tmp:
            return load_checked(fetch_checkpoint(ref, tmp), ref, task, device)
    return load_checked(Path(ref), ref, task, device)


def load_checked(path: Path, ref: str, task: str, device: torch.device):
    model, _, state = load_model(path, task=None, device=device)
    if state["task"] != task:
        raise io.InputError(f"{ref}: a model for task '{state['task']}', not '{task}'")
    if model.guidance_mode == "oracle":
        raise io.InputError(f"{ref}: a model with guidance 'oracle' needs the true noise map; it cannot restore photos")
    return model


def enhance_one(job: Job, model, kernel: np.ndarray | None, kernel_id: str, device: torch.device, args) -> None:
    """Read, restore and write one image (atomically); InputError for anything wrong with it.
    ``kernel`` None: a rain / haze model."""
    # (H, W, 3), grey files replicated (undone below); alpha apart; floats outside [0, 1] refused
    img, alpha = io.read_image_with_alpha(job.src, gray=False)
    fmt = probe_image(job.src)
    if not fmt.colour:
        img = img[..., :1]
    h, w = img.shape[:2]
    max_pixels = int(args.max_megapixels * 1e6) if args.max_megapixels > 0 else None
    y = torch.from_numpy(hwc_to_chw(img)).to(device)
    if kernel is None:
        if max_pixels is not None and h * w > max_pixels:
            raise io.InputError(f"{job.src}: {h}x{w} is over --max-megapixels {args.max_megapixels:g}; the {args.task}"
                                " model runs untiled (raise --max-megapixels, or 0 for no limit)")
        x, noise = restore_blind(model, y, amp=not args.no_amp)
    else:
        kh, kw = kernel.shape
        if kh > h or kw > w:
            raise io.InputError(f"{job.src}: the kernel {kernel_id} ({kh}x{kw}) is larger than the image ({h}x{w})")
        try:
            x, noise = deblur_channels(model, y, torch.from_numpy(kernel).to(device), max_pixels, args.blend,
                                       amp=not args.no_amp)
        except ValueError as exc:  # a budget too small for one tile, a channel mismatch
            raise io.InputError(f"{job.src}: {exc}") from exc
    out = np.clip(chw_to_hwc(x.cpu().numpy()), 0.0, 1.0)
    suffix = job.dst.suffix.lower()
    try:
        io.write_image(job.dst, out, bits=output_bits(fmt, suffix),
                       alpha=alpha if suffix in io.ALPHA_SUFFIXES else None)
        if args.save_guidance:
            base = job.dst.with_name(f"{job.dst.stem}_guidance")
            maps = chw_to_hwc(noise.float().cpu().numpy()).astype(np.float32)
            # dehaze's map is signed (log(t / t_dcp) within +-CORRECTION_LIMIT): the PNG shows 0 as mid-grey
            shown = 0.5 + maps / (2 * CORRECTION_LIMIT) if args.task == "dehaze" else maps
            io.write_image(base.with_suffix(".png"), np.clip(shown, 0.0, 1.0), bits=16)
            with io.atomic_path(base.with_suffix(".npy")) as tmp:
                np.save(tmp, maps if args.task == "dehaze" else np.clip(maps, 0.0, 1.0))
    except OSError as exc:
        raise io.InputError(f"cannot write {job.dst}: {exc.strerror or exc}") from exc
    notes = round_trip_notes(fmt, alpha is not None, suffix, model.denoiser.channels)
    if notes:
        log.info("%s -> %s: %s", job.src, job.dst, "; ".join(notes))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.max_megapixels < 0 or args.blend < 0:
        raise io.InputError("--max-megapixels and --blend must be >= 0")
    try:
        device = pick_device(args.device)
    except RuntimeError as exc:
        raise io.InputError(f"--device {args.device}: {exc}") from exc
    jobs = plan_jobs(Path(args.inp), Path(args.out))
    model = load(args.model, args.task, device)
    if args.task == "deblur":
        kernel_id, kernel = load_kernel(args.kernel, args.kernel_index)
    elif args.kernel:
        raise io.InputError(f"--kernel is for --task deblur: the {args.task} model estimates the degradation itself")
    else:
        kernel_id, kernel = "", None
    for folder in sorted({j.dst.parent for j in jobs}):
        check_writable(folder)
    failures: list[str] = []
    t0 = time.perf_counter()
    for job in tqdm(jobs, desc="enhance", unit="image", disable=args.quiet):
        try:
            enhance_one(job, model, kernel, kernel_id, device, args)
        except io.InputError as exc:
            if len(jobs) == 1:
                raise
            failures.append(str(exc))
            log.error("%s", exc)
    done = len(jobs) - len(failures)
    log.info("restored %d of %d image(s) in %.1f s on %s -> %s", done, len(jobs), time.perf_counter() - t0, device, args.out)
    if failures:
        raise io.InputError(f"{len(failures)} of {len(jobs)} images failed (the others are written):\n  "
                            + "\n  ".join(failures))


if __name__ == "__main__":
    run_main(main)
