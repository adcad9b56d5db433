"""Hostile kernels: negative, NaN or inf, not 2-D, summing to zero, empty, not numeric; a bad kernel
inside a .npy stack or a .mat cell (named by file and id), a .mat without a `kernels` variable, junk
or truncated files, an unknown file type, an empty folder; a kernel file that fails the degrade stage;
a kernel larger than the image. Each is refused naming the file (and the kernel).

Other bad-kernel cases, inside tests that need their own setup:
- tests/physics/test_blur.py::test_kernel_larger_than_image_is_refused
- tests/stages/test_benchmark.py::test_bad_inputs_are_refused_with_a_clear_message
  (a .mat without kernels, a kernel larger than the images)
- tests/stages/test_enhance.py::test_rain_and_haze_models_restore_a_folder_without_a_kernel
  (--kernel given to a rain or haze model)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from enhance_cli import assets, no_temporaries, run_in_process  # noqa: F401  (assets: a fixture)
from pipeline.io import InputError, read_kernels, validate_kernel
from stage_process import run_stage, write_params
from test_io import _assert_error_names, _kernel, _write_mat73


# --------------------------------------------------------------------------- read by pipeline.io


@pytest.mark.parametrize(
    "kernel, message",
    [
        (np.array([[0.5, -0.1], [0.3, 0.3]]), "negative"),
        (np.array([[0.5, np.nan], [0.3, 0.2]]), "NaN"),
        (np.array([[0.5, np.inf], [0.3, 0.2]]), "NaN or inf"),
        (np.ones(5), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
        (np.zeros((3, 3)), "sum"),
        (np.zeros((0, 3)), "empty"),
        (np.ones((3, 3), complex), "numeric"),
    ],
)
def test_validate_kernel_rejects(kernel: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message) as exc_info:
        validate_kernel(kernel, "bench:k07")
    _assert_error_names(exc_info, "bench:k07")


@pytest.mark.parametrize(
    "saved, kid, message",
    [
        (np.stack([_kernel(2, 2), [[0.5, -0.1], [0.3, 0.3]]]), "k02", "negative"),
        (np.array([[[0.5, np.nan], [0.3, 0.2]]]), "k01", "NaN"),
        (np.ones(5), "many", "2-D"),
        (np.zeros((3, 3)), "many", "sum"),
    ],
)
def test_bad_kernel_file_names_path_and_id(tmp_path: Path, saved: np.ndarray, kid: str, message: str) -> None:
    np.save(tmp_path / "many.npy", saved)
    with pytest.raises(InputError, match=message) as exc_info:
        read_kernels(tmp_path / "many.npy")
    _assert_error_names(exc_info, f"{tmp_path / 'many.npy'}:{kid}")


def test_bad_kernel_in_mat_cell(tmp_path: Path) -> None:
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = _kernel(), -_kernel()
    scipy.io.savemat(tmp_path / "k.mat", {"kernels": cell})
    with pytest.raises(InputError, match="negative") as exc_info:
        read_kernels(tmp_path / "k.mat")
    _assert_error_names(exc_info, f"{tmp_path / 'k.mat'}:k02")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_without_kernels_variable(tmp_path: Path, version: str) -> None:
    path = tmp_path / "k.mat"
    if version == "v5":
        scipy.io.savemat(path, {"blur": _kernel(), "psf": _kernel()})
    else:
        _write_mat73(path, {"blur": _kernel(), "psf": [_kernel()]})
    with pytest.raises(InputError, match="no 'kernels' variable") as exc_info:
        read_kernels(path)
    _assert_error_names(exc_info, path, "found: blur, psf")


def test_kernel_file_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.mat").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "k.txt").write_text("1 2 3")
    np.save(tmp_path / "none.npy", np.zeros((0, 5, 5)))
    _write_mat73(tmp_path / "trunc.mat", {"kernels": [_kernel()]})
    data = (tmp_path / "trunc.mat").read_bytes()
    (tmp_path / "trunc.mat").write_bytes(data[: len(data) // 2])
    for name, message in [
        ("junk.mat", "cannot read"),
        ("trunc.mat", "cannot read"),
        ("k.txt", "unknown kernel file type"),
        ("none.npy", "no kernels"),
        ("missing.npy", "not found"),
    ]:
        with pytest.raises(InputError, match=message) as exc_info:
            read_kernels(tmp_path / name)
        _assert_error_names(exc_info, tmp_path / name)


def test_empty_kernel_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images") as exc_info:
        read_kernels(tmp_path)
    _assert_error_names(exc_info, tmp_path)


# --------------------------------------------------------------------------- given to a stage or a command


@pytest.mark.parametrize("bad", ["negative", "nan"])
def test_bad_kernel_file_is_refused_without_partial_output(tmp_path, bad):
    k = np.ones((5, 5), np.float32)
    k[1, 2] = -0.5 if bad == "negative" else np.nan
    np.save(tmp_path / "kernels.npy", k)
    write_params(tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["degrade"]["kernels"].update(source="file", file=str(tmp_path / "kernels.npy"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(tmp_path, "prepare", "--out", "prepared").returncode == 0
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded")
    assert res.returncode == 2 and "kernels.npy" in res.stderr
    assert ("negative" in res.stderr) if bad == "negative" else ("NaN" in res.stderr or "nan" in res.stderr.lower())
    assert not (tmp_path / "degraded").exists()


def test_kernel_larger_than_the_image_is_refused(assets, tmp_path, caplog):
    np.save(tmp_path / "big.npy", np.ones((41, 41), np.float32))
    out = tmp_path / "out.png"
    code = run_in_process(caplog, "--in", str(assets / "in" / "colour.png"), "--out", str(out),
                          "--kernel", str(tmp_path / "big.npy"), "--model", str(assets / "model.pt"))
    assert code == 2 and "larger than the image (40x44)" in caplog.text and "colour.png" in caplog.text
    assert not out.exists() and no_temporaries(tmp_path)
