"""Data: built-in images load offline, deterministic splits, training patches consistent with physics."""
import numpy as np
import pytest
import torch

from pipeline.data import SKIMAGE_DEFAULT, assign_splits, limit_size, load_skimage, to_channels
from pipeline.patches import NoiseSpec, PatchSampler
from pipeline.generators.kernels import sample_kernel
from pipeline.physics.blur import BlurPhysics


def test_builtin_images_load_offline():
    for name in SKIMAGE_DEFAULT[:4]:
        img = load_skimage(name)
        assert img.dtype == np.float32 and img.ndim == 3 and 0 <= img.min() and img.max() <= 1
    assert to_channels(load_skimage("astronaut"), gray=True).shape[-1] == 1
    small = limit_size(load_skimage("astronaut"), 100)
    assert max(small.shape[:2]) == 100
    with pytest.raises(ValueError, match="not an image"):
        load_skimage("no_such_image")


def test_splits_are_deterministic_and_respect_holdout():
    names = [f"im{i}" for i in range(10)]
    a = assign_splits(names, 3, 2, seed=0, holdout=("im7",))
    assert a == assign_splits(names, 3, 2, seed=0, holdout=("im7",))
    assert a["im7"] == "test"
    assert sorted(a.values()).count("test") == 3 and sorted(a.values()).count("val") == 2
    b = assign_splits(names, 3, 2, seed=1, holdout=("im7",))
    assert a != b
    # adding an image does not reshuffle the others' ranks
    c = assign_splits(names + ["new"], 3, 2, seed=0, holdout=("im7",))
    assert sum(a[n] != c[n] for n in names) <= 2
    with pytest.raises(ValueError, match="holdout"):
        assign_splits(names, 3, 2, seed=0, holdout=("nope",))
    with pytest.raises(ValueError, match="cannot fill"):
        assign_splits(names[:4], 3, 1, seed=0)


def test_patch_sampler_batches_follow_the_forward_model():
    rng = np.random.default_rng(0)
    images = [rng.random((1, 50, 61)).astype(np.float32)]
    kernels = [sample_kernel(np.random.default_rng(i), max_size=9) for i in range(3)]
    sampler = PatchSampler(images, kernels, NoiseSpec(0.0, 0.0), 32, 9, np.random.default_rng(1))
    b = sampler.blur_batch(4)
    assert b["x"].shape == (4, 1, 32, 32) and b["kernel"].shape == (4, 9, 9) and b["target"].shape == (4, 1, 32, 32)
    # with zero noise, y is exactly the circular blur of x with the (padded) kernel
    assert torch.allclose(BlurPhysics(b["x"], b["kernel"]).A(b["x"]), b["y"], atol=1e-5)
    noisy = PatchSampler(images, kernels, NoiseSpec(5.0, 5.0), 32, 9, np.random.default_rng(1)).blur_batch(2)
    assert torch.allclose(noisy["target"], torch.tensor(0.05))
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler(images, kernels, NoiseSpec(1, 2), 64, 9, rng)
