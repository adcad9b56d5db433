"""Hostile images: random bytes, empty, truncated (8- and 16-bit), missing, a folder, a corrupt
checksum, no pixels, NaN, a float TIFF outside [0, 1], an empty folder; and where the restored image
cannot be written. Each is refused in one line naming the file; a stage exits with code 2 and leaves
no partial output; the enhance command skips a bad image in a folder and says so.

Other bad-image cases, inside tests that need their own setup:
- tests/stages/test_enhance.py::test_rain_and_haze_models_restore_a_folder_without_a_kernel
  (an image over --max-megapixels)
- tests/stages/test_benchmark.py::test_bad_inputs_are_refused_with_a_clear_message (an empty images folder)
- tests/stages/test_task_pipeline.py::test_depth_maps_are_used_and_a_wrong_size_is_refused
- tests/generators/test_rain_haze.py::test_a_depth_map_of_the_wrong_size_is_refused
- tests/test_datasets.py::test_a_missing_sample_file_names_it (a degraded sample file gone)
- tests/test_io.py::test_write_image_rejects_bad_requests (what the writer refuses)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from enhance_cli import assets, no_temporaries, run_cli, run_in_process, write_tiff  # noqa: F401  (assets: a fixture)
from pipeline import io
from pipeline.io import IMAGE_SUFFIXES, InputError, list_images, read_image, read_image_with_alpha, write_image
from stage_process import run_stage, write_params
from test_io import H, W, _assert_error_names, _image, _write


# --------------------------------------------------------------------------- read by pipeline.io


def _truncated_png(tmp_path: Path, bits: int) -> Path:
    full = tmp_path / f"full{bits}.png"
    write_image(full, _image(3), bits=bits)
    cut = tmp_path / f"cut{bits}.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


@pytest.mark.parametrize(
    "make",
    [
        lambda d: _write(d / "noise.png", np.random.default_rng(0).bytes(300)),
        lambda d: _write(d / "empty.png", b""),
        lambda d: _truncated_png(d, 8),
        lambda d: _truncated_png(d, 16),
        lambda d: d / "missing.png",
        lambda d: d,
    ],
    ids=["random-bytes", "empty-file", "truncated-8bit", "truncated-16bit", "missing", "folder"],
)
def test_bad_image_raises_input_error_naming_path(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as exc_info:
        read_image(path, gray=False)
    _assert_error_names(exc_info, path)
    message = str(exc_info.value)  # one line that says what to do, no decoder plugin advice
    assert "\n" not in message and "pip install" not in message


def test_corrupt_16bit_png_crc_detected(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _image(3), bits=16)
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[60] ^= 0xFF  # inside the IDAT payload
    (tmp_path / "a.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match="(?i)checksum|CRC") as exc_info:
        read_image(tmp_path / "a.png", gray=False)
    _assert_error_names(exc_info, tmp_path / "a.png")


def test_zero_pixel_and_nonfinite_images_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about the empty page
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 5), np.uint8))
    with pytest.raises(InputError, match="no pixels") as exc_info:
        read_image(tmp_path / "empty.tif", gray=True)
    _assert_error_names(exc_info, tmp_path / "empty.tif")

    values = np.ones((4, 5), np.float32)
    values[1, 2] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values)
    with pytest.raises(InputError, match="NaN") as exc_info:
        read_image(tmp_path / "nan.tif", gray=True)
    _assert_error_names(exc_info, tmp_path / "nan.tif")


def test_read_image_with_alpha_refuses_floats_out_of_range(tmp_path: Path) -> None:
    values = np.linspace(-0.5, 1.25, H * W, dtype=np.float32).reshape(H, W)
    tifffile.imwrite(tmp_path / "hdr.tif", values)
    with pytest.raises(InputError, match=r"\[-0\.5, 1\.25\], outside \[0, 1\]") as exc_info:
        read_image_with_alpha(tmp_path / "hdr.tif", gray=True)
    _assert_error_names(exc_info, tmp_path / "hdr.tif")
    assert "\n" not in str(exc_info.value)
    assert read_image(tmp_path / "hdr.tif", gray=True).max() == 1.0  # the pipeline's reader still clips
    tifffile.imwrite(tmp_path / "ends.tif", np.clip(values, 0, 1))  # 0 and 1 themselves are in range
    assert np.array_equal(read_image_with_alpha(tmp_path / "ends.tif", gray=True)[0][..., 0], np.clip(values, 0, 1))


def test_list_images_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images") as exc_info:
        list_images(tmp_path)
    _assert_error_names(exc_info, tmp_path, IMAGE_SUFFIXES[0])
    with pytest.raises(InputError) as exc_info:
        list_images(tmp_path / "missing")
    _assert_error_names(exc_info, tmp_path / "missing")
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- given to the prepare stage


def test_corrupt_image_is_refused_and_the_run_fails(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(5):
        write_image(images / f"ok{i}.png", np.random.default_rng(i).random((40, 40)))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    write_params(tmp_path / "params.yaml", **{"prepare.source": "folder", "prepare.folders": [str(images)],
                                               "prepare.holdout": []})
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2 and "broken.png" in res.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["hyperguide-deblur"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    write_params(tmp_path / "params.yaml", **{"prepare.source": "folder", "prepare.folders": [str(tmp_path / "empty")]})
    res = run_stage(tmp_path, "prepare", "--out", "out")
    assert res.returncode == 2 and "no images" in res.stderr and "empty" in res.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- given to the enhance command


def test_corrupt_image_is_refused_by_the_command(assets, tmp_path):
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = tmp_path / "out"
    res = run_cli("--in", str(bad), "--out", str(out / "broken.png"), "--kernel", str(assets / "kernel.npy"),
                  "--model", str(assets / "model.pt"))
    assert res.returncode == 2 and "cannot read image" in res.stderr and "broken.png" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (out / "broken.png").exists() and no_temporaries(out)


def test_a_bad_image_in_a_folder_is_skipped_and_reported(assets, tmp_path, caplog):
    folder = tmp_path / "in"
    io.write_image(folder / "good.png", np.random.default_rng(0).random((32, 32)))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    out = tmp_path / "out"
    code = run_in_process(caplog, "--in", str(folder), "--out", str(out), "--kernel", str(assets / "kernel.npy"),
                          "--model", str(assets / "model.pt"))
    assert code == 2 and "1 of 2 images failed" in caplog.text and "bad.jpg" in caplog.text
    assert (out / "good.png").exists() and not (out / "bad.jpg").exists() and no_temporaries(out)


def test_float_tiff_out_of_range_is_refused(assets, tmp_path):
    samples = np.linspace(-0.25, 1.5, 30 * 34, dtype=np.float32).reshape(30, 34)
    write_tiff(tmp_path / "in" / "hdr.tif", samples[..., None])
    out = tmp_path / "out"
    res = run_cli("--in", str(tmp_path / "in" / "hdr.tif"), "--out", str(out / "hdr.tif"),
                  "--kernel", str(assets / "kernel.npy"), "--model", str(assets / "model.pt"))
    assert res.returncode == 2, res.stderr
    assert "hdr.tif" in res.stderr and "[-0.25, 1.5]" in res.stderr and "Traceback" not in res.stderr
    assert not (out / "hdr.tif").exists() and no_temporaries(out)


def test_unwritable_output_is_refused_before_any_work(assets, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = run_in_process(caplog, "--in", str(assets / "in"), "--out", str(blocker / "out"),
                          "--kernel", str(assets / "kernel.npy"), "--model", str(assets / "model.pt"))
    assert code == 2 and "cannot write to" in caplog.text and str(blocker) in caplog.text
    assert blocker.read_text() == "not a folder"
