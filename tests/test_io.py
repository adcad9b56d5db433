"""Tests for pipeline.io on real small files written into tmp_path. The bad images, kernels and pairs
it refuses: tests/hostile/test_images.py, test_kernels.py, test_pairs.py (they use the helpers here)."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import png
import pytest
import scipy.io
import tifffile
from PIL import Image
from skimage.color import rgb2gray

from pipeline.io import (
    InputError,
    append_journal,
    append_jsonl,
    atomic_path,
    list_images,
    load_npz,
    open_journal,
    read_csv,
    read_image,
    read_image_with_alpha,
    read_json,
    read_jsonl,
    read_kernels,
    save_npz,
    sha256_file,
    validate_kernel,
    write_csv,
    write_image,
    write_json,
    write_text,
)

H, W = 23, 37  # odd and non-square, so transposed or flattened data cannot pass by accident


def _image(channels: int, seed: int = 0) -> np.ndarray:
    """Random float64 (H, W, channels) in [0, 1] with both extremes present."""
    img = np.random.default_rng(seed).random((H, W, channels))
    img[0, 0], img[-1, -1] = 0.0, 1.0
    return img


def _kernel(h: int = 5, w: int = 7, seed: int = 1) -> np.ndarray:
    """Non-negative, deliberately non-symmetric (h, w) kernel summing to 1."""
    k = np.random.default_rng(seed).random((h, w))
    k[0, -1] += 3.0  # a corner peak makes transposes and flips detectable
    return k / k.sum()


def _assert_error_names(exc_info: pytest.ExceptionInfo, *parts: object) -> None:
    for part in parts:
        assert str(part) in str(exc_info.value), f"{part!r} not in {str(exc_info.value)!r}"


# --------------------------------------------------------------------------- reference 16-bit PNG encoder
# Independent of pipeline.io's writer (which only uses the "Up" filter): exercises every
# filter type and Adam7 interlacing in the reader.

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _png16(levels: np.ndarray, filters: tuple[int, ...], interlace: bool) -> bytes:
    """uint16 (H, W, C) -> PNG bytes, scanline filter types cycling through ``filters``."""
    h, w, ch = levels.shape
    bpp = 2 * ch
    data, count = bytearray(), 0
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        sub = levels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8).astype(np.int64)
        prev = np.zeros(rows.shape[1], np.int64)
        for row in rows:
            kind = filters[count % len(filters)]
            count += 1
            left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
            up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
            pred = {0: 0, 1: left, 2: prev, 3: (left + prev) // 2, 4: _paeth(left, prev, up_left)}[kind]
            data.append(kind)
            data += ((row - pred) % 256).astype(np.uint8).tobytes()
            prev = row
    packed = zlib.compress(bytes(data))
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, int(interlace))
    half = len(packed) // 2  # two IDAT chunks: readers must concatenate them
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", packed[:half])
        + _chunk(b"IDAT", packed[half:])
        + _chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("bits, tol", [(8, 0.5 / 255 + 1e-6), (16, 1e-4)])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_image_round_trip(tmp_path: Path, bits: int, tol: float, channels: int, suffix: str) -> None:
    img = _image(channels)
    path = tmp_path / f"img{suffix}"
    write_image(path, img, bits=bits)
    back = read_image(path, gray=channels == 1)
    assert back.dtype == np.float32 and back.shape == (H, W, channels)
    assert np.abs(back - img).max() < tol
    assert back.min() == 0.0 and back.max() == 1.0


def test_16bit_png_is_really_16bit(tmp_path: Path) -> None:
    # Values between 8-bit levels only survive if neither writer nor reader drops to 8 bits.
    img = np.full((H, W, 3), 1000.2 / 65535)  # 1000 is not a multiple of 257, i.e. no 8-bit level
    write_image(tmp_path / "fine.png", img, bits=16)
    assert np.abs(read_image(tmp_path / "fine.png", gray=False) - 1000 / 65535).max() < 1e-7


def test_write_image_accepts_2d_and_jpeg(tmp_path: Path) -> None:
    img = _image(1)[..., 0]
    write_image(tmp_path / "a.png", img)
    assert read_image(tmp_path / "a.png", gray=True).shape == (H, W, 1)
    smooth = np.tile(np.linspace(0, 1, W), (H, 1))[..., None].repeat(3, axis=2)
    write_image(tmp_path / "a.jpg", smooth)
    assert np.abs(read_image(tmp_path / "a.jpg", gray=False) - smooth).mean() < 0.02


@pytest.mark.parametrize(
    "name, image, bits",
    [
        ("a.jpg", np.zeros((4, 4)), 16),
        ("a.gif", np.zeros((4, 4)), 8),
        ("a.png", np.zeros((4, 4)), 12),
        ("a.png", np.full((4, 4), np.nan), 8),
        ("a.png", np.zeros((4, 4), np.uint8), 8),
        ("a.png", np.zeros((4, 4, 2)), 8),
        ("a.png", np.zeros((4, 4)), 32),
    ],
)
def test_write_image_rejects_bad_requests(tmp_path: Path, name: str, image: np.ndarray, bits: int) -> None:
    with pytest.raises(ValueError) as exc_info:
        write_image(tmp_path / name, image, bits=bits)
    _assert_error_names(exc_info, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_grey_file_replicated_and_colour_file_greyed(tmp_path: Path) -> None:
    grey, colour = _image(1), _image(3)
    write_image(tmp_path / "g.png", grey, bits=16)
    write_image(tmp_path / "c.png", colour, bits=16)
    as_rgb = read_image(tmp_path / "g.png", gray=False)
    assert as_rgb.shape == (H, W, 3)
    assert np.array_equal(as_rgb[..., 0], as_rgb[..., 2])
    as_grey = read_image(tmp_path / "c.png", gray=True)
    assert np.abs(as_grey[..., 0] - rgb2gray(colour)).max() < 1e-4


def test_alpha_dropped_bool_scaled_float_clipped(tmp_path: Path) -> None:
    rgba = (_image(4) * 255).round().astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png", gray=False), rgba[..., :3] / np.float32(255))

    mask = np.arange(H * W).reshape(H, W) % 3 == 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert np.array_equal(read_image(tmp_path / "mask.png", gray=True)[..., 0], mask.astype(np.float32))

    values = np.linspace(-0.5, 1.5, H * W, dtype=np.float32).reshape(H, W)
    tifffile.imwrite(tmp_path / "float.tif", values)
    assert np.array_equal(read_image(tmp_path / "float.tif", gray=True)[..., 0], np.clip(values, 0, 1))


def _stored(path: Path) -> np.ndarray:
    """A PNG's or TIFF's samples as other decoders (pypng, tifffile) see them: ``(H, W, C)`` in the
    file's dtype."""
    if path.suffix == ".tif":
        a = tifffile.imread(path)
        return a[..., None] if a.ndim == 2 else a
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
    return np.vstack([np.asarray(r, dtype) for r in rows]).reshape(height, width, info["planes"])


def _store(path: Path, samples: np.ndarray) -> None:
    """``(H, W, 2|4)`` grey+alpha / RGBA samples written by pypng (PNG) or tifffile (TIFF)."""
    c = samples.shape[-1]
    if path.suffix == ".tif":
        tifffile.imwrite(path, samples, photometric="rgb" if c == 4 else "minisblack", extrasamples=["unassalpha"])
        return
    writer = png.Writer(W, H, greyscale=c == 2, alpha=True, bitdepth=8 * samples.itemsize)
    with path.open("wb") as f:
        writer.write(f, samples.reshape(H, -1))


def _palette_png(path: Path) -> np.ndarray:
    """A palette PNG whose entry 0 is transparent (a tRNS chunk); returns the expected alpha."""
    index = np.arange(H * W).reshape(H, W).astype(np.uint8) % 3
    img = Image.fromarray(index, "P")
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 200, 0])
    img.save(path, transparency=0)
    return np.where(index == 0, 0.0, 1.0).astype(np.float32)


def _colour_key_png(path: Path) -> np.ndarray:
    """A grey PNG whose level 7 is transparent (a tRNS colour key); returns the expected alpha."""
    grey = (np.arange(H * W).reshape(H, W) % 11).astype(np.uint8)
    Image.fromarray(grey, "L").save(path, transparency=7)
    return np.where(grey == 7, 0.0, 1.0).astype(np.float32)


def test_read_image_with_alpha_returns_the_stored_alpha(tmp_path: Path) -> None:
    """8- and 16-bit PNG (grey+alpha, RGBA), a palette's and a colour key's transparency, float
    TIFF: alpha as stored, scaled like the colour; the colour exactly what read_image gives."""
    rng = np.random.default_rng(5)
    rgba8 = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    Image.fromarray(rgba8, "RGBA").save(tmp_path / "rgba8.png")
    la8 = rng.integers(0, 256, (H, W, 2), dtype=np.uint8)
    Image.fromarray(la8, "LA").save(tmp_path / "la8.png")
    rgba16 = rng.integers(0, 65536, (H, W, 4), dtype=np.uint16)
    _write(tmp_path / "rgba16.png", _png16(rgba16, (0, 1, 2, 3, 4), False))
    floats = rng.random((H, W, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgbaf.tif", floats, photometric="rgb", extrasamples=["unassalpha"])
    expected = {
        "rgba8.png": rgba8[..., 3] / np.float32(255), "la8.png": la8[..., 1] / np.float32(255),
        "rgba16.png": (rgba16[..., 3] / 65535).astype(np.float32), "rgbaf.tif": floats[..., 3],
        "palette.png": _palette_png(tmp_path / "palette.png"), "key.png": _colour_key_png(tmp_path / "key.png"),
    }
    for name, alpha in expected.items():
        colour = name not in ("la8.png", "key.png")
        img, got = read_image_with_alpha(tmp_path / name, gray=not colour)
        assert got is not None and got.dtype == np.float32 and np.array_equal(got, alpha), name
        assert np.array_equal(img, read_image(tmp_path / name, gray=not colour)), name
    write_image(tmp_path / "rgb.png", _image(3))
    assert read_image_with_alpha(tmp_path / "rgb.png", gray=False)[1] is None


@pytest.mark.parametrize("suffix, bits", [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16), (".tif", 32)])
@pytest.mark.parametrize("channels", [1, 3])
def test_alpha_written_back_sample_for_sample(tmp_path: Path, suffix: str, bits: int, channels: int) -> None:
    """read_image_with_alpha then write_image at the file's depth: the same stored samples."""
    rng = np.random.default_rng(bits + channels)
    if bits == 32:
        samples = rng.random((H, W, channels + 1)).astype(np.float32)
    else:
        dtype = np.uint8 if bits == 8 else np.uint16
        samples = rng.integers(0, 2**bits, (H, W, channels + 1), dtype=dtype)
    src = tmp_path / f"src{suffix}"
    _store(src, samples)
    img, alpha = read_image_with_alpha(src, gray=channels == 1)
    write_image(tmp_path / f"back{suffix}", img, bits=bits, alpha=alpha)
    back = _stored(tmp_path / f"back{suffix}")
    assert back.dtype == samples.dtype and np.array_equal(back, samples)


def test_float_tiff_written_as_float32(tmp_path: Path) -> None:
    img = _image(3).astype(np.float32)
    write_image(tmp_path / "f.tif", img, bits=32)
    back = tifffile.imread(tmp_path / "f.tif")
    assert back.dtype == np.float32 and np.array_equal(back, img)  # exact: no levels
    write_image(tmp_path / "over.tif", img * 2 - 0.5, bits=32)
    assert tifffile.imread(tmp_path / "over.tif").min() == 0.0 and tifffile.imread(tmp_path / "over.tif").max() == 1.0


def test_write_image_refuses_alpha_where_it_cannot_go(tmp_path: Path) -> None:
    img, alpha = np.zeros((4, 5, 3)), np.ones((4, 5))
    for name, a in (("a.jpg", alpha), ("a.bmp", alpha), ("a.png", np.ones((5, 4)))):
        with pytest.raises(ValueError) as exc_info:
            write_image(tmp_path / name, img, alpha=a)
        _assert_error_names(exc_info, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_lzw_tiff_readable_without_imagecodecs(tmp_path: Path) -> None:
    rgb = (_image(3) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert np.array_equal(read_image(tmp_path / "lzw.tif", gray=False), rgb / np.float32(255))


def test_grey_alpha_with_four_rows_keeps_its_layout(tmp_path: Path) -> None:
    # skimage.io.imread would swap the axes of this (4, 6, 2) image.
    la = np.random.default_rng(0).integers(0, 256, (4, 6, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png", gray=True)[..., 0], la[..., 0] / np.float32(255))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_decoder_all_filters(tmp_path: Path, interlace: bool, channels: int) -> None:
    levels = np.random.default_rng(channels).integers(0, 65536, (H, W, channels), dtype=np.uint16)
    (tmp_path / "x.png").write_bytes(_png16(levels, (0, 1, 2, 3, 4), interlace))
    expected = levels[..., :1] if channels in (1, 2) else levels[..., :3]
    back = read_image(tmp_path / "x.png", gray=channels in (1, 2))
    assert np.array_equal(back, (expected / 65535).astype(np.float32))


def test_16bit_png_from_pillow(tmp_path: Path) -> None:
    # Another encoder's filter choices, decoded by pipeline.io's 16-bit path.
    levels = np.random.default_rng(3).integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png", gray=True)[..., 0], (levels / 65535).astype(np.float32))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- folders


def test_list_images_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.Tiff", "d.bmp", "notes.txt", "e.npy", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "sub.png" / "inner.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.Tiff", "d.bmp"]


# --------------------------------------------------------------------------- atomic writes


def test_atomic_path_success_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp.name.startswith(".tmp-")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_atomic_path_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new but incomplete")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------- records


def test_json_round_trip_and_nan_refused(tmp_path: Path) -> None:
    obj = {"z": 1, "a": [np.float32(0.5), np.int64(3)], "arr": np.arange(3), "path": tmp_path}
    write_json(tmp_path / "r.json", obj)
    assert read_json(tmp_path / "r.json") == {"z": 1, "a": [0.5, 3], "arr": [0, 1, 2], "path": str(tmp_path)}
    assert list(read_json(tmp_path / "r.json")) == ["z", "a", "arr", "path"]  # key order kept

    with pytest.raises(ValueError) as exc_info:
        write_json(tmp_path / "bad.json", {"psnr": float("nan")})
    _assert_error_names(exc_info, tmp_path / "bad.json")
    with pytest.raises(ValueError):
        write_json(tmp_path / "bad.json", {"x": np.array([1.0, np.inf])})
    assert not (tmp_path / "bad.json").exists()


def test_read_json_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    for path in (tmp_path / "broken.json", tmp_path / "missing.json"):
        with pytest.raises(InputError) as exc_info:
            read_json(path)
        _assert_error_names(exc_info, path)


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"image": "a,b.png", "psnr": 30.5}, {"image": 'q"uote', "ssim": 0.9}, {"psnr": 1}]
    write_csv(tmp_path / "m.csv", rows)
    assert read_csv(tmp_path / "m.csv") == [
        {"image": "a,b.png", "psnr": "30.5", "ssim": ""},
        {"image": 'q"uote', "psnr": "", "ssim": "0.9"},
        {"image": "", "psnr": "1", "ssim": ""},
    ]
    write_csv(tmp_path / "empty.csv", [])
    assert read_csv(tmp_path / "empty.csv") == []


def test_read_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc_info:
        read_csv(tmp_path / "missing.csv")
    _assert_error_names(exc_info, tmp_path / "missing.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(InputError, match="line 3") as exc_info:
        read_csv(tmp_path / "ragged.csv")
    _assert_error_names(exc_info, tmp_path / "ragged.csv")


def test_npz_round_trip_exact_name(tmp_path: Path) -> None:
    a, b = np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], np.int16)
    save_npz(tmp_path / "arrays.bin", a=a, b=b)
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.bin"]
    back = load_npz(tmp_path / "arrays.bin")
    assert sorted(back) == ["a", "b"]
    assert np.array_equal(back["a"], a) and back["a"].dtype == np.float32
    assert np.array_equal(back["b"], b) and back["b"].dtype == np.int16


def test_npz_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "single.npy", np.zeros(3))
    for path in (tmp_path / "bad.npz", tmp_path / "missing.npz", tmp_path / "single.npy"):
        with pytest.raises(InputError) as exc_info:
            load_npz(path)
        _assert_error_names(exc_info, path)
    with pytest.raises(ValueError):
        save_npz(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "obj.npz").exists()


def test_sha256_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 << 20)  # more than one read block
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError):
        sha256_file(tmp_path / "missing")


# --------------------------------------------------------------------------- kernels


def test_validate_kernel_normalises_and_squeezes() -> None:
    k = _kernel() * 7.0
    out = validate_kernel(k[None], "k")
    assert out.dtype == np.float32 and out.shape == (5, 7)
    assert np.allclose(out, k / k.sum(), atol=1e-7) and abs(float(out.sum()) - 1) < 1e-6
    assert validate_kernel(np.ones((1, 9)), "motion").shape == (1, 9)  # a 1xN kernel is 2-D
    tiny = _kernel()
    tiny[2, 2] = -1e-9
    assert validate_kernel(tiny, "tiny").min() == 0.0


def test_kernels_npy_2d_and_3d(tmp_path: Path) -> None:
    one, stack = _kernel(), np.stack([_kernel(seed=s) for s in range(3)])
    np.save(tmp_path / "blur.npy", one * 3)
    np.save(tmp_path / "many.npy", stack)
    [(kid, k)] = read_kernels(tmp_path / "blur.npy")
    assert kid == "blur" and np.allclose(k, one, atol=1e-7)
    pairs = read_kernels(tmp_path / "many.npy")
    assert [kid for kid, _ in pairs] == ["k01", "k02", "k03"]
    assert all(np.allclose(k, ref, atol=1e-7) for (_, k), ref in zip(pairs, stack))


def test_kernels_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", motion=np.stack([_kernel(seed=1), _kernel(seed=2)]), box=np.ones((3, 3)))
    pairs = read_kernels(tmp_path / "k.npz")
    assert [kid for kid, _ in pairs] == ["box", "motion_01", "motion_02"]
    assert np.allclose(pairs[0][1], np.full((3, 3), 1 / 9))
    assert np.allclose(pairs[2][1], _kernel(seed=2), atol=1e-7)


@pytest.mark.parametrize("cell_shape", [(1, 3), (3, 1)])
def test_kernels_mat_v5_cell(tmp_path: Path, cell_shape: tuple[int, int]) -> None:
    kernels = [_kernel(5, 7, 1), _kernel(9, 3, 2), _kernel(1, 1, 3)]
    cell = np.empty(cell_shape, dtype=object)
    for i, k in enumerate(kernels):
        cell.flat[i] = k
    scipy.io.savemat(tmp_path / "k.mat", {"kernels": cell, "other": np.eye(2)})
    pairs = read_kernels(tmp_path / "k.mat")
    assert [kid for kid, _ in pairs] == ["k01", "k02", "k03"]
    for (_, k), ref in zip(pairs, kernels):
        assert k.shape == ref.shape and np.allclose(k, ref, atol=1e-7)


def test_kernels_mat_v5_numeric_3d(tmp_path: Path) -> None:
    stack = np.stack([_kernel(seed=s) for s in range(4)])
    scipy.io.savemat(tmp_path / "k.mat", {"kernels": stack})
    pairs = read_kernels(tmp_path / "k.mat")
    assert [kid for kid, _ in pairs] == ["k01", "k02", "k03", "k04"]
    assert np.allclose(pairs[3][1], stack[3], atol=1e-7)


def _write_mat73(path: Path, variables: dict[str, object]) -> None:
    """Write variables the way MATLAB's ``save -v7.3`` lays them out.

    Arrays are stored with reversed axes; a list becomes a cell array: an (N, 1) dataset of
    object references to datasets in ``#refs#``. The 512-byte user block holds MATLAB's text header.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for name, value in variables.items():
            if isinstance(value, list):
                cell = f.create_dataset(name, shape=(len(value), 1), dtype=h5py.ref_dtype)
                cell.attrs["MATLAB_class"] = np.bytes_(b"cell")
                for i, k in enumerate(value):
                    member = refs.create_dataset(f"{name}_{i}", data=np.asarray(k).T)
                    member.attrs["MATLAB_class"] = np.bytes_(b"double")
                    cell[i, 0] = member.ref
            else:
                f.create_dataset(name, data=np.asarray(value).T).attrs["MATLAB_class"] = np.bytes_(b"double")
    with path.open("r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: test".ljust(128))


def test_kernels_mat_v73_cell_transpose_undone(tmp_path: Path) -> None:
    kernels = [_kernel(5, 7, 1), _kernel(9, 3, 2)]
    assert not np.allclose(kernels[0][:5, :5], kernels[0][:5, :5].T)  # non-symmetric on purpose
    _write_mat73(tmp_path / "k.mat", {"kernels": kernels})
    assert h5py.is_hdf5(tmp_path / "k.mat")
    pairs = read_kernels(tmp_path / "k.mat")
    assert [kid for kid, _ in pairs] == ["k01", "k02"]
    for (_, k), ref in zip(pairs, kernels):
        assert k.shape == ref.shape and np.allclose(k, ref, atol=1e-7)


def test_kernels_mat_v73_numeric_3d(tmp_path: Path) -> None:
    stack = np.stack([_kernel(seed=s) for s in range(3)])
    _write_mat73(tmp_path / "k.mat", {"kernels": stack})
    pairs = read_kernels(tmp_path / "k.mat")
    assert len(pairs) == 3 and np.allclose(pairs[1][1], stack[1], atol=1e-7)


def test_kernel_png_and_folder(tmp_path: Path) -> None:
    k = _kernel(7, 9)
    write_image(tmp_path / "single.png", k / k.max(), bits=16)
    [(kid, out)] = read_kernels(tmp_path / "single.png")
    assert kid == "single" and np.allclose(out, k, atol=1e-5)

    folder = tmp_path / "kernels"
    for name, seed in [("motion_b", 2), ("motion_a", 1)]:
        ref = _kernel(5, 7, seed)
        write_image(folder / f"{name}.png", ref / ref.max(), bits=16)
    (folder / "README.txt").write_text("not a kernel")
    pairs = read_kernels(folder)
    assert [kid for kid, _ in pairs] == ["motion_a", "motion_b"]
    assert np.allclose(pairs[0][1], _kernel(5, 7, 1), atol=1e-5)


def test_json_file_is_valid_for_strict_readers(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1.5})
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("\n") and json.loads(text) == {"b": 1.5}


def test_jsonl_appends_and_a_line_cut_by_a_kill_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "j.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"b": [1.5, "x"]})
    assert read_jsonl(path) == [{"a": 1}, {"b": [1.5, "x"]}]
    with pytest.raises(ValueError, match="j.jsonl"):
        append_jsonl(path, {"c": float("inf")})
    with path.open("a") as f:
        f.write('{"c": ')  # a kill mid-append
    assert read_jsonl(path) == [{"a": 1}, {"b": [1.5, "x"]}]
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(InputError, match="line 2 of"):
        read_jsonl(path)


def test_a_journal_is_reused_only_under_its_settings(tmp_path: Path) -> None:
    path, settings = tmp_path / "out" / "j.jsonl", {"methods": ["a"], "seed": 0}
    assert open_journal(path, settings) == ([], False) and not path.exists()  # nothing written until a record
    append_journal(path, settings, {"id": 1})
    append_journal(path, settings, {"id": 2})
    with path.open("a") as f:
        f.write('{"id": 3, "ro')
    assert open_journal(path, dict(reversed(settings.items()))) == ([{"id": 1}, {"id": 2}], False)
    append_journal(path, settings, {"id": 3})  # on a line of its own: the cut one is gone
    assert open_journal(path, settings) == ([{"id": 1}, {"id": 2}, {"id": 3}], False)
    assert open_journal(path, {**settings, "seed": 1}) == ([], True) and not path.exists()
    path.write_text('{"id": 1}\n')  # no header: not trusted
    assert open_journal(path, settings) == ([], True) and not path.exists()
