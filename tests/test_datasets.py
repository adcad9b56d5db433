"""The one sample reader: the prepare/degrade layout in, typed samples out, bad layouts refused."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import datasets, io
from pipeline.data import chw_to_hwc


def write_split(root, rng, task: str):
    """A prepared + degraded layout as the two stages write it: 3 grey images (train, val, test)
    for deblurring, colour for rain; one degraded sample per val/test image."""
    prepared, degraded = root / "prepared", root / "degraded"
    c = 1 if task == "deblur" else 3
    manifest, samples = [], []
    for name, split in (("a", "train"), ("b", "val"), ("c", "test")):
        x = rng.random((c, 21, 17)).astype(np.float32)
        io.write_image(prepared / "images" / f"{name}.png", chw_to_hwc(x))
        manifest.append({"name": name, "split": split, "channels": c, "origin": f"skimage:{name}"})
        if split == "train":
            continue
        sid = f"{split}-{name}-0"
        y = rng.random((c, 21, 17)).astype(np.float32)
        if task == "deblur":
            io.save_npz(degraded / "samples" / f"{sid}.npz", y=y, sigma=np.full((1, 21, 17), 0.03, np.float32),
                        kernel=np.full((3, 5), 1 / 15, np.float32))
            samples.append({"sample_id": sid, "split": split, "image": name, "kernel_id": "k0", "noise_level": 3.0})
        else:
            io.save_npz(degraded / "samples" / f"{sid}.npz", y=y, target=rng.random((1, 21, 17)).astype(np.float32),
                        streaks=y, density=y[:1])
            samples.append({"sample_id": sid, "split": split, "image": name, "variant": 0})
    io.write_csv(prepared / "manifest.csv", manifest)
    io.write_csv(degraded / "samples.csv", samples)
    return prepared, degraded


def test_deblur_sample_names_its_arrays(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "deblur")
    (s,) = datasets.read_split(prepared, degraded, "test")
    assert (s.sample_id, s.split, s.image) == ("test-c-0", "test", "c")
    assert s.y.shape == s.x.shape == (1, 21, 17) and s.target.shape == (1, 21, 17)
    assert s.kernel.shape == (3, 5) and s.kernel_shape == (3, 5) and s.truth == {}
    assert s.noise_level == 3.0
    x = io.read_image(prepared / "images" / "c.png", gray=True)
    np.testing.assert_array_equal(s.x[0], x[..., 0])


def test_task_sample_keeps_the_drawn_truth(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "derain")
    (s,) = datasets.read_split(prepared, degraded, "val")
    assert s.kernel is None and s.kernel_shape == (1, 1) and np.isnan(s.noise_level)
    assert s.x.shape == (3, 21, 17) and set(s.truth) == {"streaks", "density"}
    assert datasets.channels(prepared) == 3
    assert [im.shape for im in datasets.clean_images(prepared, "train")] == [(3, 21, 17)]


def test_lazy_iteration_equals_the_loaded_split(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "deblur")
    rows = datasets.sample_rows(degraded, "val")
    (lazy,) = list(datasets.iter_split(prepared, degraded, rows))
    (eager,) = datasets.read_split(prepared, degraded, "val")
    np.testing.assert_array_equal(lazy.y, eager.y)
    assert lazy.record == eager.record


def test_empty_split_and_unknown_split_are_refused(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "deblur")
    with pytest.raises(io.InputError, match="no train samples"):
        datasets.read_split(prepared, degraded, "train")
    assert datasets.read_split(prepared, degraded, "train", required=False) == []
    with pytest.raises(ValueError, match="split 'tset'"):
        datasets.sample_rows(degraded, "tset")
    with pytest.raises(io.InputError, match="no image in the test split"):
        io.write_csv(prepared / "manifest.csv", [{"name": "a", "split": "train", "channels": 1, "origin": "x"}])
        datasets.clean_images(prepared, "test")


def test_a_missing_sample_file_names_it(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "deblur")
    (degraded / "samples" / "test-c-0.npz").unlink()
    with pytest.raises(io.InputError, match="test-c-0.npz"):
        datasets.read_split(prepared, degraded, "test")


def test_only_a_real_pair_may_lack_its_guidance_target(tmp_path, rng):
    prepared, degraded = write_split(tmp_path, rng, "derain")
    (row,) = datasets.sample_rows(degraded, "test")
    io.save_npz(degraded / "samples" / f"{row['sample_id']}.npz", y=rng.random((3, 21, 17)).astype(np.float32))
    with pytest.raises(io.InputError, match=r"test-c-0\.npz: no guidance target"):
        datasets.load_sample(prepared, degraded, row)  # a synthetic sample that lost its truth
    s = datasets.load_sample(prepared, degraded, {**row, "source": "pair"})
    assert s.target is None and s.y.shape == s.x.shape == (3, 21, 17)
