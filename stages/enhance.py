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

--model is a checkpoint file (models/<task>/seed-<S>/model.pt, what `dvc repro` trains) or an MLflow model URI
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
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline import io
from pipeline.device import pick_device
from pipeline.enhance import DEFAULT_BLEND, TASKS, Job, check_writable, load_task_model, plan_jobs, read_input, \
    restore_image, round_trip_notes, select_kernel, write_restored
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
                        " default models/<task>/seed-0/model.pt")
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


def load(ref: str, task: str, device: torch.device):
    """The model behind ``ref`` (checkpoint path or MLflow URI), refused for another task."""
    if is_model_uri(ref):
        with tempfile.TemporaryDirectory(prefix="hyperguide-model-") as tmp:
            return load_task_model(fetch_checkpoint(ref, tmp), ref, task, device)
    return load_task_model(Path(ref), ref, task, device)


def enhance_one(job: Job, model, kernel, kernel_id: str, device: torch.device, args) -> None:
    """Read, restore and write one image (atomically); InputError for anything wrong with it.
    ``kernel`` None: a rain / haze model."""
    img, alpha, fmt = read_input(job.src)  # floats outside [0, 1] refused
    try:
        out, maps = restore_image(model, img, kernel, device, task=args.task, max_megapixels=args.max_megapixels,
                                  blend=args.blend, amp=not args.no_amp, kernel_id=kernel_id)
    except ValueError as exc:  # over the pixel budget, a kernel larger than the image, a channel mismatch
        raise io.InputError(f"{job.src}: {exc}") from exc
    write_restored(job.dst, out, alpha, fmt, maps if args.save_guidance else None, args.task)
    notes = round_trip_notes(fmt, alpha is not None, job.dst.suffix, model.denoiser.channels)
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
    kernel_id, kernel = select_kernel(args.task, args.kernel, args.kernel_index)
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
