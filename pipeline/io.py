"""File I/O for the pipeline: images, blur kernels, JSON/CSV/NPZ records.

Every reader turns a bad file into :class:`InputError` naming the offending path, so a
run over a benchmark folder fails with "which file" rather than a bare decoder traceback.
Every writer goes through :func:`atomic_path`, so a crash or a kill mid-write never
leaves a half-written result that a later stage (or a resumed run) would trust.

Conventions: images are float32 ``(H, W, C)`` in [0, 1] with ``C`` 1 (grey) or 3 (RGB);
kernels are float32 ``(h, w)``, non-negative, summing to 1.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import imageio.v3 as iio
import numpy as np
import yaml
import png
import scipy.io
import tifffile
from PIL import Image
from skimage.color import rgb2gray

PathLike = str | os.PathLike[str]


class InputError(ValueError):
    """Bad input file/folder; message always names the offending path."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

ALPHA_SUFFIXES = (".png", ".tif", ".tiff")  # what write_image can store an alpha channel in
FLOAT_SUFFIXES = (".tif", ".tiff")  # ... and float samples in

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WRITE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_JPEG_QUALITY = 95  # Pillow's default of 75 leaves artefacts large enough to move restoration metrics


# --------------------------------------------------------------------------- images


def read_image(path: PathLike, gray: bool) -> np.ndarray:
    """Read an image file as float32 in [0, 1].

    Returns shape ``(H, W, 1)`` if ``gray`` else ``(H, W, 3)``. Grey files are replicated to
    three channels when ``gray`` is False; colour files go through ``skimage.color.rgb2gray``
    when it is True. Alpha is dropped (not composited). Unsigned integers are scaled by their
    type's maximum (8-bit by 255, 16-bit by 65535), bool maps to 0/1, floats are clipped.

    Raises InputError (naming ``path``) for a missing, unreadable, corrupt or truncated file,
    an image with 0 pixels, non-finite values or an unsupported pixel type/layout.
    """
    p, raw = _stored_image(path, transparency=False)
    return _to_channels(_to_unit_float(raw, p, clip=True), p, gray)


def read_image_with_alpha(path: PathLike, gray: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_image` for a caller that writes the image back: nothing is changed silently.

    Returns the image as :func:`read_image` does and the file's alpha channel float32 ``(H, W)``
    in [0, 1], scaled like the colour (so :func:`write_image` at the file's bit depth stores it
    back sample for sample), or None when the file has none. A PNG's ``tRNS`` chunk (a
    transparent palette entry or colour key) counts as alpha. Unlike :func:`read_image`, float
    values outside [0, 1] are refused (InputError naming the file and the range found), not
    clipped.
    """
    p, raw = _stored_image(path, transparency=True)
    unit = _to_unit_float(raw, p, clip=False)
    alpha = np.ascontiguousarray(unit[..., -1]) if unit.ndim == 3 and unit.shape[2] in (2, 4) else None
    return _to_channels(unit, p, gray), alpha


def _stored_image(path: PathLike, transparency: bool) -> tuple[Path, np.ndarray]:
    """``(path, stored array)`` of an image file with at least one pixel (see :func:`_decode_image`)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image not found: {p}")
    if not p.is_file():
        raise InputError(f"not an image file: {p}")
    raw = _decode_image(p, transparency)
    if raw.ndim < 2 or raw.shape[0] * raw.shape[1] == 0:
        raise InputError(f"image has no pixels (shape {raw.shape}): {p}")
    return p, raw


def _decode_image(p: Path, transparency: bool = False) -> np.ndarray:
    """Decode ``p`` to its stored array: ``(H, W)`` or ``(H, W, C)`` in the file's dtype.

    ``transparency``: an 8-bit PNG's ``tRNS`` chunk becomes an alpha channel (Pillow's
    decoder otherwise ignores it; the 16-bit decoder always applies it)."""
    try:
        if _is_16bit_png(p):
            # Pillow (hence imageio and skimage.io) silently truncates 16-bit colour PNGs
            # to 8 bits, so 16-bit PNGs are decoded here.
            return _decode_png16(p)
        if transparency and (mode := _png_transparency_mode(p)):
            return np.asarray(iio.imread(p, plugin="pillow", mode=mode))
        # imageio rather than skimage.io.imread: the latter swaps axes of images whose
        # height is 3 or 4 and whose channel count is not (e.g. a 4-row grey+alpha image).
        return np.asarray(iio.imread(p))
    except Exception as exc:  # decoders raise OSError, ValueError, SyntaxError, zlib.error, ...
        error = exc
    if p.suffix.lower() in (".tif", ".tiff"):
        # imageio reads TIFF with tifffile, which needs the optional imagecodecs package for
        # LZW/JPEG compression; Pillow decodes those itself.
        with contextlib.suppress(Exception):
            return np.asarray(iio.imread(p, plugin="pillow"))
    # One line, in our words: the decoders' own messages run to several lines and suggest
    # installing plugins, which never helps with a corrupt file.
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "backend" in reason:  # imageio found no decoder for the bytes: not an image it knows
        reason = "its content is no image format this reader knows"
    raise InputError(f"cannot read image {p}: {reason}; is the file complete and really a "
                     f"{p.suffix.lower() or 'image'} file? Re-export or replace it") from error


def _png_transparency_mode(p: Path) -> str | None:
    """The Pillow mode that applies an 8-bit PNG's ``tRNS`` chunk ("RGBA" or "LA"), or None
    when ``p`` is no PNG or has no such chunk."""
    with p.open("rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
    with Image.open(p) as im:  # reads the chunks before the pixel data only
        if "transparency" not in im.info or im.mode in ("RGBA", "LA"):
            return None
        return "RGBA" if im.mode in ("RGB", "P") else "LA"


def _to_unit_float(raw: np.ndarray, p: Path, clip: bool) -> np.ndarray:
    """Map stored pixel values to float32 in [0, 1]; shape unchanged. Floats outside [0, 1] are
    clipped if ``clip``, else refused."""
    if raw.dtype == np.bool_:
        return raw.astype(np.float32)
    if np.issubdtype(raw.dtype, np.unsignedinteger):
        return (raw.astype(np.float64) / np.iinfo(raw.dtype).max).astype(np.float32)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all():
            raise InputError(f"image contains NaN or inf: {p}")
        if not clip:
            lo, hi = float(raw.min()), float(raw.max())
            if lo < 0.0 or hi > 1.0:
                raise InputError(f"{p}: float values span [{lo:.6g}, {hi:.6g}], outside [0, 1] (what the models work"
                                 " in); rescale the image to [0, 1] first: nothing is clipped silently")
        return np.clip(raw, 0.0, 1.0).astype(np.float32)
    # Signed integers have no agreed mapping to [0, 1]; guessing would silently shift values.
    raise InputError(f"unsupported pixel type {raw.dtype} in {p}")


def _to_channels(img: np.ndarray, p: Path, gray: bool) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 1|2|3|4)`` float32 -> ``(H, W, 1)`` if gray else ``(H, W, 3)``."""
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            f"unsupported image layout {img.shape} in {p} (expected (H, W) or (H, W, 1|2|3|4);"
            " multi-page and animated files are not supported)"
        )
    img = img[..., :1] if img.shape[2] in (1, 2) else img[..., :3]  # drop alpha
    if gray and img.shape[2] == 3:
        img = np.clip(rgb2gray(img), 0.0, 1.0)[..., None]  # weights sum to 1, clip only absorbs rounding
    elif not gray and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img, dtype=np.float32)


def list_images(folder: PathLike) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``folder``, sorted by name.

    Hidden files are skipped: they include :func:`atomic_path`'s in-flight temporaries and
    macOS ``._*`` resource forks, neither of which is a real image.
    Raises InputError if the folder is missing, not a folder, or holds no images.
    """
    p = Path(folder)
    if not p.exists():
        raise InputError(f"folder not found: {p}")
    if not p.is_dir():
        raise InputError(f"not a folder: {p}")
    files = sorted(
        f
        for f in p.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()
    )
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
    return files


PAIR_LAYOUTS = {"derain": ("rain", "norain"), "dehaze": ("hazy", "clear")}


def _pair_key(path: Path, prefixes: tuple[str, ...]) -> str:
    """``rain-001.png`` / ``norain-001.png`` / ``001.png`` -> ``001``: either folder's name is
    dropped as a prefix (Rain100H names the files of both folders ``norain-N``); the suffix is
    ignored so PNG and JPEG pairs match."""
    stem = path.stem
    for name in sorted(prefixes, key=len, reverse=True):
        for p in (name + "-", name + "_", name):
            if stem.lower().startswith(p) and len(stem) > len(p):
                return stem[len(p):]
    return stem


def list_pairs(folder: PathLike, degraded: str, clean: str) -> list[tuple[Path, Path]]:
    """Matching ``(degraded, clean)`` image pairs from ``folder/degraded`` and ``folder/clean``.

    Names match after dropping the folder name as a prefix (``rain-001.png`` <-> ``norain-001.png``)
    and the suffix. Raises InputError, naming the first unmatched files, unless every image has
    its partner: a silently dropped pair would bias the benchmark.
    """
    root = Path(folder)
    d_files = {_pair_key(f, (degraded, clean)): f for f in list_images(root / degraded)}
    c_files = {_pair_key(f, (degraded, clean)): f for f in list_images(root / clean)}
    only_d, only_c = sorted(set(d_files) - set(c_files)), sorted(set(c_files) - set(d_files))
    if only_d or only_c:
        raise InputError(
            f"{root}: {degraded}/ and {clean}/ do not match: "
            + "; ".join(part for part in (
                f"no {clean} partner for {', '.join(d_files[k].name for k in only_d[:5])}" if only_d else "",
                f"no {degraded} partner for {', '.join(c_files[k].name for k in only_c[:5])}" if only_c else "") if part))
    return [(d_files[k], c_files[k]) for k in sorted(d_files)]


def write_image(path: PathLike, image: np.ndarray, bits: int = 8, alpha: np.ndarray | None = None) -> None:
    """Save a float image atomically; the format follows the suffix (PNG, TIFF, JPEG, BMP).

    ``image``: float (or bool) ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``, nominally in [0, 1]
    (clipped). ``bits``: 8 or 16 (16 only for PNG and TIFF) or 32, float32 samples (TIFF only).
    8 and 16: values are rounded to the nearest level, so a write/read round trip errs by at most
    ``0.5 / (2**bits - 1)``; 32 stores float32 values exactly. ``alpha``: an alpha channel float
    ``(H, W)`` in [0, 1] stored after the colour at the same depth (PNG and TIFF only; TIFF marks
    it unassociated, as PNG's is).
    Raises ValueError (naming ``path``) for an unsupported suffix/bits, shape, dtype or NaN.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _WRITE_SUFFIXES:
        raise ValueError(f"cannot write {p}: unsupported suffix {suffix!r} (use {', '.join(_WRITE_SUFFIXES)})")
    if bits not in (8, 16, 32):
        raise ValueError(f"cannot write {p}: bits must be 8, 16 or 32 (float), got {bits}")
    if bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise ValueError(f"cannot write {p}: 16-bit output needs .png or .tif/.tiff")
    if bits == 32 and suffix not in FLOAT_SUFFIXES:
        raise ValueError(f"cannot write {p}: float (32-bit) output needs .tif/.tiff")
    if alpha is not None and suffix not in ALPHA_SUFFIXES:
        raise ValueError(f"cannot write {p}: alpha needs .png or .tif/.tiff")
    levels = _quantise(image, bits, p)
    if alpha is not None:
        if np.shape(alpha) != levels.shape[:2]:
            raise ValueError(f"cannot write {p}: alpha of shape {np.shape(alpha)} for an image of {levels.shape[:2]}")
        levels = np.dstack([levels, _quantise(alpha, bits, p)])
    with atomic_path(p) as tmp:
        if suffix == ".png" and bits == 16:
            _encode_png16(tmp, levels)  # Pillow cannot write 16-bit colour PNG
        elif suffix in (".tif", ".tiff") and alpha is not None:
            tifffile.imwrite(tmp, levels, photometric="rgb" if levels.shape[2] == 4 else "minisblack",
                             extrasamples=["unassalpha"])
        elif suffix in (".tif", ".tiff"):
            iio.imwrite(tmp, levels, plugin="tifffile")
        elif suffix in (".jpg", ".jpeg"):
            iio.imwrite(tmp, levels, plugin="pillow", extension=suffix, quality=_JPEG_QUALITY)
        else:
            iio.imwrite(tmp, levels, plugin="pillow", extension=suffix)


def _quantise(image: np.ndarray, bits: int, p: Path) -> np.ndarray:
    """Float ``(H, W[, 1|3])`` in [0, 1] -> uint8/uint16 (``bits`` 8/16) or float32 (32)
    ``(H, W)`` or ``(H, W, 3)``."""
    a = np.asarray(image)
    # Integer input is almost always an already-quantised image; clipping it to [0, 1]
    # would silently turn it into a binary mask.
    if a.dtype.kind not in "fb":
        raise ValueError(f"cannot write {p}: expected a float image in [0, 1], got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"cannot write {p}: expected shape (H, W), (H, W, 1) or (H, W, 3), got {np.shape(image)}")
    if a.size == 0:
        raise ValueError(f"cannot write {p}: image has no pixels (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"cannot write {p}: image contains NaN or inf")
    if bits == 32:
        return np.clip(a, 0.0, 1.0).astype(np.float32)
    top = 2**bits - 1
    return np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


# --------------------------------------------------------------------------- 16-bit PNG
# Pillow (hence imageio and skimage.io) truncates 16-bit colour PNGs to 8 bits on reading and
# refuses to write them: pypng does both exactly.


def _is_16bit_png(p: Path) -> bool:
    """True if ``p`` starts with a PNG signature and an IHDR declaring bit depth 16."""
    with p.open("rb") as f:
        head = f.read(33)  # signature (8) + IHDR length/type (8) + width, height, depth (9)
    return len(head) >= 25 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 16


def _encode_png16(path: Path, levels: np.ndarray) -> None:
    """uint16 ``(H, W)`` or ``(H, W, 2|3|4)`` (grey, grey+alpha, RGB, RGBA) -> a 16-bit PNG file."""
    h, w = levels.shape[:2]
    planes = 1 if levels.ndim == 2 else levels.shape[2]
    writer = png.Writer(width=w, height=h, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16)
    with path.open("wb") as f:
        writer.write(f, levels.reshape(h, -1))


def _decode_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG -> uint16 ``(H, W)`` (grey) or ``(H, W, C)``, C in 2, 3, 4 (pypng checks CRCs)."""
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    out = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    return out[..., 0] if planes == 1 else out


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary is ``.tmp-<random>-<name>`` in the same folder: same filesystem so
    ``os.replace`` is atomic, same suffix so writers that pick a format by suffix still
    work, hidden so :func:`list_images` ignores it. If the body raises, the temporary is
    deleted and an existing ``path`` is left untouched. Parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{secrets.token_hex(8)}-{target.name}")
    try:
        yield tmp
        # Flush to disk before the rename, so a power cut cannot leave `path` pointing at
        # an empty file (the rename can reach the journal before the data does).
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful replace


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` whole.

    A stage that fails half-way leaves the previous output (or none) in place, never a folder
    with some files new and some missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{secrets.token_hex(8)}-{target.name}")
    tmp.mkdir()
    try:
        yield tmp
        old = target.with_name(f".old-{secrets.token_hex(8)}-{target.name}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically, byte for byte (no newline translation)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


# --------------------------------------------------------------------------- records


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent 2, key order kept, trailing newline) atomically.

    numpy scalars/arrays and Paths are converted. Raises ValueError naming ``path`` if
    ``obj`` holds NaN or inf (not valid JSON; most readers reject them), TypeError naming
    it for unserialisable objects; nothing is written in either case.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise ValueError(f"cannot write JSON {path}: {exc}") from exc
    except TypeError as exc:
        raise TypeError(f"cannot write JSON {path}: {exc}") from exc
    write_text(path, text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def read_json(path: PathLike) -> Any:
    """Parse a JSON file. Raises InputError naming ``path`` if missing or invalid."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"JSON file not found: {p}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read JSON {p}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON in {p}: {exc}") from exc


def read_yaml(path: PathLike) -> Any:
    """A YAML file's content; InputError naming the path if it is missing or not valid YAML."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML: {exc}") from exc


def write_csv(path: PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV atomically.

    Columns are the union of the rows' keys in first-seen order; a row missing a column
    gets an empty cell. No rows gives an empty file.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        if columns:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def append_jsonl(path: PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created with its folder), flushed and fsynced
    before returning: a journal line that a kill one instruction later cannot lose. NaN / inf are
    refused (ValueError naming ``path``), as :func:`write_json` refuses them."""
    try:
        line = json.dumps(record, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise ValueError(f"cannot append JSON to {path}: {exc}") from exc
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8", newline="") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list[Any]:
    """The records of a JSON-lines file (``[]`` when it is missing). A last line cut short (a kill
    mid-append: no newline, or not valid JSON) is dropped; a bad line before it is an InputError."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {p}: {exc}") from exc
    records = []
    for number, line in enumerate(lines[:-1], 1):  # lines[-1]: "" or the unterminated last line
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines) - 1:
                raise InputError(f"line {number} of {p} is not valid JSON: {exc}") from exc
    return records


def open_journal(path: PathLike, settings: dict[str, Any]) -> tuple[list[Any], bool]:
    """The records of the JSON-lines journal at ``path`` if it was written under ``settings`` (its
    first line, see :func:`append_journal`), and whether one written under other settings (or
    without a header) was found and deleted. A last line cut short is dropped from the file too,
    so appends after it start on a line of their own. A missing journal is ``([], False)``."""
    header, records = _journal_header(settings), read_jsonl(path)
    if records and records[0] == header:
        write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        return records[1:], False
    Path(path).unlink(missing_ok=True)
    return [], bool(records)


def append_journal(path: PathLike, settings: dict[str, Any], record: dict[str, Any]) -> None:
    """Append ``record`` to the journal at ``path`` (:func:`append_jsonl`), first creating it with
    its header, ``{"settings": <SHA-256 of settings as canonical JSON>}``, if it does not exist."""
    if not Path(path).exists():
        append_jsonl(path, _journal_header(settings))
    append_jsonl(path, record)


def _journal_header(settings: dict[str, Any]) -> dict[str, str]:
    return {"settings": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()}


def read_csv(path: PathLike) -> list[dict[str, str]]:
    """Read a CSV with a header row into one dict per row (all values are strings).

    Raises InputError naming ``path`` if it is missing, unreadable, or has a row whose
    field count differs from the header (a truncated or hand-mangled file).
    """
    p = Path(path)
    try:
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    raise InputError(f"line {reader.line_num} of {p} does not match the header's field count")
                rows.append(row)
            return rows
    except FileNotFoundError as exc:
        raise InputError(f"CSV file not found: {p}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV {p}: {exc}") from exc


def save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """Save ``arrays`` to a compressed ``.npz`` atomically, at exactly ``path``.

    Object arrays are refused (they would need pickle, which :func:`load_npz` refuses).
    """
    # Writing to an open file stops numpy from appending ".npz" to the name.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, allow_pickle=False, **arrays)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` (no pickle). Raises InputError if missing or corrupt."""
    p = Path(path)
    try:
        data = np.load(p, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError(f"npz file not found: {p}") from exc
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, BadZipFile, ...
        raise InputError(f"cannot read npz {p}: {exc}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"not an .npz archive (a single .npy array?): {p}")
    with data:
        try:
            return {key: data[key] for key in data.files}
        except Exception as exc:  # a damaged member only fails when read
            raise InputError(f"cannot read npz {p}: {exc}") from exc


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks. Raises InputError if missing."""
    p = Path(path)
    digest = hashlib.sha256()
    try:
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot hash {p}: {exc}") from exc
    return digest.hexdigest()


# --------------------------------------------------------------------------- kernels


def validate_kernel(kernel: np.ndarray, name: str) -> np.ndarray:
    """Check a blur kernel and return it as float32 ``(h, w)`` normalised to sum 1.

    Extra singleton axes beyond two are squeezed (``(1, h, w)`` -> ``(h, w)``), but a
    ``(1, w)`` motion kernel stays 2-D. Negatives down to ``-1e-6 * max|k|`` (rounding or
    FFT noise) are clipped to 0. Raises InputError mentioning ``name`` if the kernel is
    not numeric, not 2-D, empty, non-finite, has larger negative entries, or sums to <= 0.
    """
    k = np.asarray(kernel)
    # Casting complex would silently drop the imaginary part; object arrays are nested cells.
    if k.dtype.kind not in "biuf":
        raise InputError(f"kernel {name}: expected a numeric array, got dtype {k.dtype}")
    k = k.astype(np.float64)
    while k.ndim > 2 and 1 in k.shape:
        k = np.squeeze(k, axis=k.shape.index(1))
    if k.ndim != 2:
        raise InputError(f"kernel {name}: expected a 2-D array, got shape {k.shape}")
    if k.size == 0:
        raise InputError(f"kernel {name}: empty (shape {k.shape})")
    if not np.isfinite(k).all():
        raise InputError(f"kernel {name}: contains NaN or inf")
    peak = float(np.abs(k).max())
    if k.min() < -1e-6 * peak:
        raise InputError(f"kernel {name}: negative entries (min {k.min():.3g}, max |k| {peak:.3g})")
    k = np.clip(k, 0.0, None)
    total = float(k.sum())
    if total <= 0:
        raise InputError(f"kernel {name}: sum is {total:.3g}, must be > 0")
    return (k / total).astype(np.float32)


def read_kernels(path: PathLike) -> list[tuple[str, np.ndarray]]:
    """Read blur kernels as ``(kernel_id, kernel)`` pairs, each kernel float32 ``(h, w)`` summing to 1.

    Sources:

    * ``.mat`` (MATLAB v5 or v7.3/HDF5) with a variable ``kernels``: a cell array (one
      kernel per cell, in MATLAB's column-major order), a numeric 2-D array (one kernel) or
      a numeric 3-D ``(N, h, w)`` array (split along the first axis);
    * ``.npy``: 2-D (one kernel) or 3-D ``(N, h, w)``;
    * ``.npz``: every array, keys sorted, each 2-D (id ``key``) or 3-D (ids ``key_01``, ...);
    * an image file: one kernel, read as grey;
    * a folder: every image in it (:func:`list_images`), id = file stem.

    Multi-kernel containers get ids ``k01``, ``k02``, ... (more digits past 99); a single
    kernel gets the file stem. Raises InputError naming ``path`` for a missing, corrupt or
    unsupported file, a ``.mat`` without ``kernels``, zero kernels or duplicate ids, and
    (through :func:`validate_kernel`, name ``f"{path}:{kernel_id}"``) for a bad kernel.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        raw = [(f.stem, read_image(f, gray=True)[..., 0]) for f in list_images(p)]
    elif not p.exists():
        raise InputError(f"kernel file not found: {p}")
    elif suffix == ".mat":
        raw = _read_mat_kernels(p)
    elif suffix == ".npy":
        raw = _split_stack(_load_npy(p), p.stem, "k")
    elif suffix == ".npz":
        arrays = load_npz(p)
        raw = [pair for key in sorted(arrays) for pair in _split_stack(arrays[key], key, f"{key}_")]
    elif suffix in IMAGE_SUFFIXES:
        raw = [(p.stem, read_image(p, gray=True)[..., 0])]
    else:
        raise InputError(
            f"unknown kernel file type {suffix!r}: {p} (expected .mat, .npy, .npz, an image or a folder of images)"
        )
    if not raw:
        raise InputError(f"no kernels in {p}")
    ids = [kid for kid, _ in raw]
    if len(set(ids)) != len(ids):
        duplicated = sorted({kid for kid in ids if ids.count(kid) > 1})
        raise InputError(f"duplicate kernel ids in {p}: {', '.join(duplicated)}")
    return [(kid, validate_kernel(k, f"{p}:{kid}")) for kid, k in raw]


def _kernel_ids(n: int, prefix: str = "k") -> list[str]:
    """``k01 .. kNN``: 1-based, at least two digits, wider when needed so ids sort in order."""
    width = max(2, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _split_stack(array: np.ndarray, single_id: str, prefix: str) -> list[tuple[str, np.ndarray]]:
    """3-D ``(N, h, w)`` -> N pairs with ids ``prefix01``...; anything else -> one pair.

    Arrays that are neither 2-D nor 3-D are passed on as one kernel so that
    :func:`validate_kernel` reports their shape.
    """
    array = np.asarray(array)
    if array.ndim == 3:
        return list(zip(_kernel_ids(array.shape[0], prefix), array))
    return [(single_id, array)]


def _load_npy(p: Path) -> np.ndarray:
    try:
        array = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ...
        raise InputError(f"cannot read npy {p}: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"not a single .npy array (an .npz archive?): {p}")
    return array


def _read_mat_kernels(p: Path) -> list[tuple[str, np.ndarray]]:
    """The ``kernels`` variable of a MATLAB file, split into ``(id, raw array)`` pairs."""
    if h5py.is_hdf5(p):
        return _read_mat73_kernels(p)
    try:
        contents = scipy.io.loadmat(p)
    except NotImplementedError:  # scipy's answer to v7.3; is_hdf5 should have caught it
        return _read_mat73_kernels(p)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError, ...
        raise InputError(f"cannot read MATLAB file {p}: {exc}") from exc
    if "kernels" not in contents:
        names = sorted(k for k in contents if not k.startswith("__"))
        raise InputError(f"no 'kernels' variable in {p}; found: {', '.join(names) or 'nothing'}")
    value = contents["kernels"]
    if value.dtype.names:
        raise InputError(f"'kernels' in {p} is a MATLAB struct; expected a cell array or numeric array")
    if value.dtype == object:
        cells = value.ravel(order="F")  # MATLAB's linear (column-major) cell order
        return list(zip(_kernel_ids(cells.size), cells))
    return _split_stack(value, p.stem, "k")


def _read_mat73_kernels(p: Path) -> list[tuple[str, np.ndarray]]:
    """Like :func:`_read_mat_kernels` for MATLAB v7.3 (HDF5) files.

    MATLAB writes column-major arrays as HDF5 (row-major) datasets with the axes reversed,
    so every array is transposed back. A cell array is a dataset of object references.
    """
    try:
        with h5py.File(p, "r") as f:
            if "kernels" not in f:
                names = sorted(k for k in f if not k.startswith("#"))  # '#refs#', '#subsystem#' are internal
                raise InputError(f"no 'kernels' variable in {p}; found: {', '.join(names) or 'nothing'}")
            node = f["kernels"]
            if not isinstance(node, h5py.Dataset):
                raise InputError(f"'kernels' in {p} is a MATLAB struct; expected a cell array or numeric array")
            if h5py.check_dtype(ref=node.dtype) is not h5py.Reference:
                return _split_stack(_mat73_array(node), p.stem, "k")
            # The stored reference array is MATLAB's transposed, so its C-order ravel is
            # MATLAB's column-major cell order.
            refs = node[()].ravel()
            pairs = []
            for kid, ref in zip(_kernel_ids(refs.size), refs):
                target = f[ref] if ref else None
                if not isinstance(target, h5py.Dataset):
                    raise InputError(f"cell {kid} of 'kernels' in {p} is not a numeric array")
                pairs.append((kid, _mat73_array(target)))
            return pairs
    except InputError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, ...
        raise InputError(f"cannot read MATLAB v7.3 file {p}: {exc}") from exc


def _mat73_array(dataset: h5py.Dataset) -> np.ndarray:
    """A MATLAB v7.3 array in MATLAB's axis order."""
    # MATLAB stores an empty array's *shape* as its data, flagged by this attribute.
    if dataset.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    return np.asarray(dataset[()]).T
