"""PSNR/SSIM: skimage's values, the border crop, and identical pairs that stay finite."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from pipeline.metrics import PSNR_CAP_DB, kernel_crop, psnr, ssim


def test_psnr_is_skimages_on_the_cropped_pair(rng):
    gt = rng.random((37, 29, 3))
    x = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1)
    assert psnr(x, gt, crop=4) == pytest.approx(peak_signal_noise_ratio(gt[4:-4, 4:-4], x[4:-4, 4:-4], data_range=1.0))
    assert kernel_crop((9, 5)) == 4


def test_identical_images_score_the_cap_not_infinity(rng):
    gt = rng.random((37, 29, 1))
    value = psnr(gt.copy(), gt)
    assert value == PSNR_CAP_DB and math.isfinite(value)
    json.dumps({"psnr": value}, allow_nan=False)  # what metrics.json needs
    assert ssim(gt.copy(), gt) == pytest.approx(1.0)


def test_mismatched_shapes_and_overlarge_crops_are_refused(rng):
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(rng.random((8, 8, 1)), rng.random((8, 9, 1)))
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(rng.random((8, 8, 1)), rng.random((8, 8, 1)), crop=4)


def test_luminance_is_bt601_and_colour_scores_carry_it():
    from pipeline.evaluation import aggregate, score
    from pipeline.metrics import luminance

    rgb = np.zeros((4, 5, 3))
    assert np.allclose(luminance(rgb), 16 / 255) and np.allclose(luminance(np.ones((4, 5, 3))), 235 / 255)
    red = np.zeros((4, 5, 3))
    red[..., 0] = 1.0
    assert np.allclose(luminance(red), (16 + 65.481) / 255)
    with pytest.raises(ValueError, match="RGB"):
        luminance(np.zeros((4, 5)))
    rng = np.random.default_rng(0)
    x = rng.random((3, 20, 22))
    out = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    s = score({"m": out}, x, (1, 1))["m"]
    assert s["psnr_y"] == pytest.approx(psnr(luminance(out.transpose(1, 2, 0)), luminance(x.transpose(1, 2, 0))))
    assert s["psnr_y"] > s["psnr"]  # the luma's range is 219/255 and averages the channels' noise
    assert set(score({"m": out[:1]}, x[:1], (1, 1))["m"]) == {"psnr", "ssim"}  # grey: no luma
    rows = [{"method": "m", "image": "a", **s}, {"method": "m", "image": "b", **s}]
    entry = aggregate(rows, [], ["m"])["methods"]["m"]
    assert entry["psnr_y_mean"] == pytest.approx(s["psnr_y"]) and entry["ssim_y_mean"] == pytest.approx(s["ssim_y"])
