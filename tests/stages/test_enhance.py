"""The enhance command: folders mirrored with bit depth and colour kept, a model through its MLflow
URI, and inputs never silently changed. Bad input refused (a corrupt image, a truncated or another
task's model, a kernel larger than the image, an unwritable output, an out-of-range float TIFF):
tests/hostile/."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from enhance_cli import TINY, assets, no_temporaries, run_in_process, tiny_checkpoint, write_tiff  # noqa: F401
from pipeline import io
from pipeline.io import InputError
from pipeline.checkpoint import save_model
from pipeline.data import hwc_to_chw
from pipeline.enhance import deblur_channels, probe_image
from pipeline.models.factory import build_model
from stages import enhance

QUANT_16 = 1.0 / 65535  # a 16-bit write/read round trip errs by at most half of it


def test_folder_is_mirrored_keeping_depth_and_colour(assets, tmp_path, caplog):
    out = tmp_path / "out"
    code = run_in_process(caplog, "--in", str(assets / "in"), "--out", str(out), "--kernel", str(assets / "kernel.npy"),
                          "--model", str(assets / "model.pt"), "--save-guidance")
    assert code == 0
    for name, bits, colour in (("colour.png", 16, True), ("sub/grey.jpg", 8, False), ("grey16.tif", 16, False)):
        assert probe_image(out / name) == probe_image(assets / "in" / name)
        assert (probe_image(out / name).bits, probe_image(out / name).colour) == (bits, colour)
        stem = (out / name).with_suffix("")
        maps = np.load(f"{stem}_guidance.npy")
        assert maps.shape[-1] == (3 if colour else 1) and np.isfinite(maps).all() and (maps > 0).all()
        assert probe_image(f"{stem}_guidance.png").bits == 16
    assert no_temporaries(out)


def test_model_from_its_mlflow_uri_gives_the_checkpoints_output(assets, tmp_path, monkeypatch, caplog):
    """Log the checkpoint as the train stage does (pt2 + the checkpoint alongside), resolve it by
    runs:/ and models:/ URIs, and compare with the checkpoint's own output."""
    import mlflow

    from pipeline.models.packaged import PackagedDeblur
    from stages.tracking import Tracker, fetch_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    model = tiny_checkpoint(tmp_path / "model.pt")
    example = np.zeros((2, 2, 16, 16), np.float32)
    example[:, 0] = 0.5
    example[:, 1, 8, 8] = 1.0
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run, torch.no_grad():
        Tracker(mlflow, run).log_pytorch_model(PackagedDeblur(model), tmp_path / "model.pt", example, 1,
                                               {"task": "deblur", "channels": 1}, registered_model_name="hg-test")
    registered = fetch_checkpoint("models:/hg-test/1", tmp_path / "fetched")
    assert registered.read_bytes() == (tmp_path / "model.pt").read_bytes()
    with pytest.raises(InputError, match="cannot fetch MLflow model models:/hg-test/7"):
        fetch_checkpoint("models:/hg-test/7", tmp_path / "missing")

    src = assets / "in" / "grey16.tif"
    code = run_in_process(caplog, "--in", str(src), "--out", str(tmp_path / "via_uri.tif"),
                          "--kernel", str(assets / "kernel.npy"), "--model", f"runs:/{run.info.run_id}/model")
    assert code == 0, caplog.text
    y = torch.from_numpy(hwc_to_chw(io.read_image(src, gray=True)))
    ref, _ = deblur_channels(model, y, torch.from_numpy(np.load(assets / "kernel.npy")))
    got = io.read_image(tmp_path / "via_uri.tif", gray=True)[..., 0]
    assert np.abs(got - ref[0].clamp(0, 1).numpy()).max() <= QUANT_16


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        enhance.parse_args(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    for option in ("--task", "--kernel-index", "--model", "--max-megapixels", "--save-guidance", "--device",
                   "runs:/", "weights_only", "derain", "alpha", "float TIFF"):
        assert option in text


@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_rain_and_haze_models_restore_a_folder_without_a_kernel(assets, tmp_path, caplog, task):
    torch.manual_seed(0)
    model = build_model(TINY, 3, task=task).eval()
    save_model(tmp_path / "model.pt", model, TINY, 3, task)
    out = tmp_path / "out"
    common = ["--task", task, "--in", str(assets / "in"), "--model", str(tmp_path / "model.pt")]
    assert run_in_process(caplog, *common, "--out", str(out), "--save-guidance") == 0
    colour = io.read_image(out / "colour.png", gray=False)
    assert probe_image(out / "colour.png").bits == 16 and probe_image(out / "sub" / "grey.jpg").colour is False
    from pipeline.models.task_models import Observation
    y = torch.from_numpy(hwc_to_chw(io.read_image(assets / "in" / "colour.png", gray=False)))[None]
    with torch.no_grad():
        expected = model(Observation(y)).x[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    assert np.abs(colour - expected).max() <= QUANT_16
    maps = np.load(out / "colour_guidance.npy")
    assert maps.shape == (40, 44, 1)
    with torch.no_grad():
        estimate = model.estimate_guidance(y)[0, 0].numpy()
    if task == "dehaze":  # the signed transmission correction: exact in the .npy, 0 -> mid-grey in the PNG
        from pipeline.physics.haze import CORRECTION_LIMIT
        assert np.allclose(maps[..., 0], estimate, atol=1e-6)
        shown = io.read_image(out / "colour_guidance.png", gray=True)[..., 0]
        assert np.abs(shown - np.clip(0.5 + maps[..., 0] / (2 * CORRECTION_LIMIT), 0, 1)).max() <= QUANT_16
    else:
        assert np.allclose(maps[..., 0], np.clip(estimate, 0, 1), atol=1e-6)
    caplog.clear()
    assert run_in_process(caplog, *common, "--out", str(tmp_path / "k"), "--kernel", str(assets / "kernel.npy")) == 2
    assert "--kernel is for --task deblur" in caplog.text
    caplog.clear()
    assert run_in_process(caplog, *common[:2], "--in", str(assets / "in" / "colour.png"), "--out", str(tmp_path / "b.png"),
                          "--model", str(tmp_path / "model.pt"), "--max-megapixels", "0.001") == 2
    assert "over --max-megapixels" in caplog.text and not (tmp_path / "b.png").exists()


# --------------------------------------------------------------------------- inputs never silently changed
# Inputs written by other encoders (Pillow, pypng, tifffile) and outputs read back the same way, so
# the checks do not lean on pipeline.io's own reader and writer.


def stored(path) -> np.ndarray:
    """A PNG's or TIFF's samples as stored: ``(H, W, C)`` in the file's dtype (a PNG's tRNS as alpha)."""
    import png
    import tifffile

    if str(path).endswith(".png"):
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
        return np.vstack([np.asarray(r, dtype) for r in rows]).reshape(height, width, info["planes"])
    a = tifffile.imread(path)
    return a[..., None] if a.ndim == 2 else a


def note(caplog, name: str) -> str:
    """What the log says was done to the input file ``name`` (its line "<in> -> <out>: <notes>"
    has the notes; "" when there is no line)."""
    lines = [r.getMessage() for r in caplog.records if f"/{name} -> " in r.getMessage()]
    assert len(lines) <= 1, lines
    return lines[0].split(" -> ", 1)[1].split(": ", 1)[1] if lines else ""


def write_png(path, levels: np.ndarray) -> None:
    """uint8 / uint16 ``(H, W, 2|4)`` as a grey+alpha / RGBA PNG (pypng)."""
    import png

    h, w, c = levels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = png.Writer(w, h, greyscale=c == 2, alpha=True, bitdepth=8 * levels.dtype.itemsize)
    with open(path, "wb") as f:
        writer.write(f, levels.reshape(h, -1))


@pytest.mark.parametrize("name, dtype, channels", [
    ("rgba8.png", np.uint8, 4), ("rgba16.png", np.uint16, 4), ("greyalpha8.png", np.uint8, 2),
    ("greyalpha16.tif", np.uint16, 2), ("rgbafloat.tif", np.float32, 4)])
def test_alpha_is_passed_through_bit_exactly(assets, tmp_path, caplog, name, dtype, channels):
    """The alpha of a PNG or TIFF comes out unchanged, sample for sample, in the input's type; the
    colour channels are restored exactly as those of the same image without alpha."""
    rng = np.random.default_rng(channels)
    if dtype == np.float32:
        samples = rng.random((32, 36, channels)).astype(np.float32)
    else:
        samples = rng.integers(0, np.iinfo(dtype).max + 1, (32, 36, channels), dtype=dtype)
    src, plain = tmp_path / "in" / name, tmp_path / "in" / f"plain-{name}"
    (write_png if name.endswith(".png") else write_tiff)(src, samples)
    write_tiff(plain, samples[..., :-1]) if name.endswith(".tif") else \
        io.write_image(plain, samples[..., :-1] / np.iinfo(dtype).max, bits=8 * samples.itemsize)
    out = tmp_path / "out"
    code = run_in_process(caplog, "--in", str(tmp_path / "in"), "--out", str(out), "--kernel", str(assets / "kernel.npy"),
                          "--model", str(assets / "model.pt"))
    assert code == 0, caplog.text
    got = stored(out / name)
    assert got.dtype == samples.dtype and got.shape == samples.shape
    assert np.array_equal(got[..., -1], samples[..., -1])
    assert np.array_equal(got[..., :-1], stored(out / f"plain-{name}"))
    assert "alpha passed through unchanged" in note(caplog, name)
    assert "alpha" not in note(caplog, f"plain-{name}")


def test_palette_png_transparency_is_kept_as_alpha(assets, tmp_path, caplog):
    from PIL import Image

    index = np.random.default_rng(3).integers(0, 4, (32, 36)).astype(np.uint8)
    pal = Image.fromarray(index, "P")
    pal.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200])
    pal.save(tmp_path / "icon.png", transparency=0)  # palette entry 0 transparent: a tRNS chunk
    out = tmp_path / "out.png"
    code = run_in_process(caplog, "--in", str(tmp_path / "icon.png"), "--out", str(out),
                          "--kernel", str(assets / "kernel.npy"), "--model", str(assets / "model.pt"))
    assert code == 0, caplog.text
    got = stored(out)
    assert got.shape == (32, 36, 4) and np.array_equal(got[..., 3], np.where(index == 0, 0, 255))
    assert "alpha passed through unchanged" in note(caplog, "icon.png")


def test_alpha_into_jpeg_is_dropped_and_said(assets, tmp_path, caplog):
    src = tmp_path / "rgba.png"
    write_png(src, np.random.default_rng(4).integers(0, 256, (32, 36, 4), dtype=np.uint8))
    out = tmp_path / "out.jpg"
    code = run_in_process(caplog, "--in", str(src), "--out", str(out), "--kernel", str(assets / "kernel.npy"),
                          "--model", str(assets / "model.pt"))
    assert code == 0 and out.exists()
    assert "alpha dropped (.jpg holds none)" in note(caplog, "rgba.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_float_tiff_gives_a_float32_tiff(assets, tmp_path, caplog, channels):
    """Float in, float32 out: no quantisation to 16 bits; the values are the model's, clipped to [0, 1]."""
    samples = np.random.default_rng(5).random((30, 34, channels)).astype(np.float32)
    samples[0, 0], samples[-1, -1] = 0.0, 1.0  # both ends of the range are accepted
    write_tiff(tmp_path / "in.tif", samples)
    out = tmp_path / "out.tif"
    code = run_in_process(caplog, "--in", str(tmp_path / "in.tif"), "--out", str(out),
                          "--kernel", str(assets / "kernel.npy"), "--model", str(assets / "model.pt"))
    assert code == 0, caplog.text
    got = stored(out)
    assert got.dtype == np.float32 and got.shape == samples.shape
    assert got.min() >= 0.0 and got.max() <= 1.0
    model = tiny_checkpoint(tmp_path / "same.pt")
    ref, _ = deblur_channels(model, torch.from_numpy(hwc_to_chw(samples)), torch.from_numpy(np.load(assets / "kernel.npy")))
    assert np.abs(got - ref.clamp(0, 1).numpy().transpose(1, 2, 0)).max() < 1e-6  # no 16-bit levels
    assert "float kept (float32)" in note(caplog, "in.tif")


def test_a_plain_round_trip_logs_no_note(assets, tmp_path, caplog):
    """The grey model on a grey 16-bit TIFF: nothing changed, nothing to say; a colour image says it
    was restored channel by channel."""
    out = tmp_path / "out"
    code = run_in_process(caplog, "--in", str(assets / "in"), "--out", str(out), "--kernel", str(assets / "kernel.npy"),
                          "--model", str(assets / "model.pt"))
    assert code == 0
    assert note(caplog, "grey16.tif") == "" and note(caplog, "grey.jpg") == ""
    assert "colour restored channel by channel (grey model)" in note(caplog, "colour.png")
