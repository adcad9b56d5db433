"""The one reader of a prepared + degraded split: every stage, the sweep and the benchmark read
their samples here and nowhere else.

Layout (written by the ``prepare`` and ``degrade`` stages):

- ``prepared/manifest.csv`` (``name, split, channels, origin``) and ``prepared/images/<name>.png``
  (and, for real pairs, ``prepared/observed/<name>.png``, the observation);
- ``degraded/samples.csv`` (``sample_id, split, image`` and the task's record columns) and
  ``degraded/samples/<sample_id>.npz``: ``y`` and the truth of the draw. Deblurring stores
  ``sigma`` (the true noise map) and ``kernel``; rain and haze store ``target`` (the guidance
  map the proxy learns) and the drawn truth (``streaks``, ``density`` / ``t``, ``airlight``, ``depth``).

A :class:`Sample` names those arrays after what they are, whatever the task. The benchmark's
samples come from here too: :func:`blurred_samples` (a folder of images x a kernel file, degraded
on the fly) and :func:`pair_samples` (real degraded / clean pairs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import io
from pipeline.data import hwc_to_chw
from pipeline.generators.kernels import KernelSample
from pipeline.generators.seeds import derive_seed
from pipeline.synthesis import degrade

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One degraded sample and its ground truth.

    Attributes:
        sample_id: the ``samples.csv`` id (``test-camera-k0-n1.0``).
        split: ``val`` or ``test``.
        image: the clean image's name in the manifest.
        y: ``(C, H, W)`` float32 observation in [0, 1].
        x: ``(C, H, W)`` float32 clean image.
        target: ``(1, H, W)`` the guidance target: the true noise map (deblurring, in [0, 1]
            units), the streak density (rain) or the transmission correction ``log(t / t_dcp)`` (haze);
            ``None`` for real pairs (the benchmark's and ``prepare.source: pairs``), which carry no
            guidance truth.
        kernel: ``(kh, kw)`` the blur (deblurring); ``None`` for rain and haze.
        truth: the rest of the draw (``streaks``, ``density``, ``t``, ``airlight``, ``depth``).
        record: the sample's ``samples.csv`` row (strings, as written).
    """

    sample_id: str
    split: str
    image: str
    y: np.ndarray
    x: np.ndarray
    target: np.ndarray | None
    kernel: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    record: dict[str, str] = field(default_factory=dict)

    @property
    def noise_level(self) -> float:
        """The nominal noise level in percent (deblurring; ``nan`` for rain and haze)."""
        return float(self.record.get("noise_level", "nan"))

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """The blur's shape, ``(1, 1)`` without one: what :func:`pipeline.metrics.kernel_crop` crops."""
        return tuple(self.kernel.shape) if self.kernel is not None else (1, 1)


def read_manifest(prepared: str | Path) -> list[dict[str, str]]:
    """The rows of ``prepared/manifest.csv``; InputError when it is missing or empty."""
    rows = io.read_csv(Path(prepared) / "manifest.csv")
    if not rows:
        raise io.InputError(f"{Path(prepared) / 'manifest.csv'}: no images")
    return rows


def channels(prepared: str | Path) -> int:
    """The channel count of the prepared images (1 grey, 3 colour)."""
    return int(read_manifest(prepared)[0]["channels"])


def clean_image(prepared: str | Path, name: str, gray: bool) -> np.ndarray:
    """``(C, H, W)`` the prepared image ``name``."""
    return hwc_to_chw(io.read_image(Path(prepared) / "images" / f"{name}.png", gray=gray))


def clean_images(prepared: str | Path, split: str) -> list[np.ndarray]:
    """Every prepared image of ``split``, ``(C, H, W)`` each, in manifest order; InputError when none."""
    rows = read_manifest(prepared)
    gray = int(rows[0]["channels"]) == 1
    images = [clean_image(prepared, r["name"], gray) for r in rows if r["split"] == split]
    if not images:
        raise io.InputError(f"{Path(prepared) / 'manifest.csv'}: no image in the {split} split")
    return images


def observed_images(prepared: str | Path, split: str) -> list[np.ndarray]:
    """The real observations of ``split``'s images (``prepare.source: pairs``: ``observed/<name>.png``),
    ``(C, H, W)`` each, in the order of :func:`clean_images`; InputError when the prepared data
    have none (prepared from clean images alone)."""
    rows = read_manifest(prepared)
    gray = int(rows[0]["channels"]) == 1
    folder = Path(prepared) / "observed"
    if not folder.is_dir():
        raise io.InputError(f"{folder}: no real observations (prepared with prepare.source other than pairs)")
    return [hwc_to_chw(io.read_image(folder / f"{r['name']}.png", gray=gray)) for r in rows if r["split"] == split]


def sample_rows(degraded: str | Path, split: str) -> list[dict[str, str]]:
    """The ``samples.csv`` rows of ``split``, in file order (no arrays loaded)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    return [r for r in io.read_csv(Path(degraded) / "samples.csv") if r["split"] == split]


def load_sample(prepared: str | Path, degraded: str | Path, row: dict[str, str]) -> Sample:
    """The :class:`Sample` of one ``samples.csv`` row (its ``.npz`` and its clean image)."""
    arrays = io.load_npz(Path(degraded) / "samples" / f"{row['sample_id']}.npz")
    y = arrays.pop("y")
    x = clean_image(prepared, row["image"], gray=y.shape[0] == 1)
    if "kernel" in arrays:  # deblurring: the noise map is the guidance target
        target, kernel = arrays.pop("sigma"), arrays.pop("kernel")
    elif "target" in arrays:
        target, kernel = arrays.pop("target"), None
    elif row.get("source") == "pair":  # a real pair (prepare.source: pairs) has no guidance truth
        target, kernel = None, None
    else:
        raise io.InputError(f"{Path(degraded) / 'samples' / (row['sample_id'] + '.npz')}: no guidance target "
                            "(only a real pair, source 'pair' in samples.csv, may lack one)")
    return Sample(row["sample_id"], row["split"], row["image"], y, x, target, kernel, arrays, dict(row))


def read_split(prepared: str | Path, degraded: str | Path, split: str, required: bool = True) -> list[Sample]:
    """Every sample of ``split``, loaded; InputError naming ``samples.csv`` when ``required`` and none."""
    rows = sample_rows(degraded, split)
    if required and not rows:
        raise io.InputError(f"{Path(degraded) / 'samples.csv'}: no {split} samples (prepare.split)")
    return [load_sample(prepared, degraded, r) for r in rows]


def iter_split(prepared: str | Path, degraded: str | Path, rows: list[dict[str, str]]) -> Iterator[Sample]:
    """Load ``rows`` one at a time (evaluation over large splits holds one sample in memory)."""
    for r in rows:
        yield load_sample(prepared, degraded, r)


def blurred_samples(images: list[Path], kernels: list[tuple[str, np.ndarray]], levels: list[float], seed: int,
                    noise_mode: str = "constant", spread: float = 0.8, gray: bool = True) -> Iterator[Sample]:
    """One :class:`Sample` per (image, kernel, noise level in percent), in that order, blurred and
    noised on the fly from a seed of its own (``sample_id`` ``<image>-<kernel_id>-<level>``; the
    target is the drawn noise map). InputError when a kernel is larger than an image."""
    for path in images:
        for kid, kernel in kernels:
            for level in levels:
                x = hwc_to_chw(io.read_image(path, gray=gray))
                if kernel.shape[0] > x.shape[1] or kernel.shape[1] > x.shape[2]:
                    raise io.InputError(f"{path}: image {x.shape[1]}x{x.shape[2]} is smaller than kernel {kid} "
                                        f"({kernel.shape[0]}x{kernel.shape[1]})")
                rng = np.random.default_rng(derive_seed(seed, "benchmark", path.name, kid, level))
                d = degrade(x, KernelSample(kernel, "file", {}), level / 100.0, noise_mode, spread, rng)
                yield Sample(f"{path.stem}-{kid}-{level:g}", "benchmark", path.stem, d.y, x, d.sigma_map, kernel,
                             record={"kernel_id": kid, "noise_level": str(level)})


def pair_samples(pairs: list[tuple[Path, Path]]) -> Iterator[Sample]:
    """One :class:`Sample` per real ``(degraded, clean)`` image pair, named after the clean image;
    no guidance target (``target`` is None). InputError when a pair's sizes differ."""
    for degraded, clean in pairs:
        y, x = hwc_to_chw(io.read_image(degraded, gray=False)), hwc_to_chw(io.read_image(clean, gray=False))
        if y.shape != x.shape:
            raise io.InputError(f"{degraded}: {y.shape[1]}x{y.shape[2]}, but its pair {clean} is {x.shape[1]}x{x.shape[2]}")
        yield Sample(clean.stem, "pairs", clean.stem, y, x, None)
