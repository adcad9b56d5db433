"""The directional global sparse model (Deng et al. 2018) on the project's synthetic rain over real
images: the streak angle it reads, the optimality and feasibility of its ADMM solution, and that it
actually derains."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.baselines.dgsm import LUMA, dgsm_derain, objective, rain_layer, streak_angle
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.evaluation import DGSM, method_names, restore_task
from pipeline.generators.rain import add_rain
from pipeline.metrics import psnr
from pipeline.config import ModelConfig
from pipeline.models.factory import build_model


def _img(name: str, side: int = 96, gray: bool = False) -> np.ndarray:
    return np.ascontiguousarray(limit_size(to_channels(load_skimage(name), gray=gray), side).transpose(2, 0, 1))


@pytest.mark.parametrize("name,seed", [("coffee", 0), ("coffee", 1), ("coffee", 3), ("chelsea", 2), ("chelsea", 4)])
def test_streak_angle_reads_the_drawn_rain_direction(name, seed):
    s = add_rain(_img(name, 128), np.random.default_rng(seed))
    luma = torch.from_numpy(s.y.astype(np.float64)).mul(torch.tensor(LUMA)[:, None, None]).sum(0)
    drawn = s.record["rain_angle"]
    assert abs(math.degrees(streak_angle(luma)) - drawn) < 6.0, drawn


def test_the_admm_solution_is_feasible_and_no_worse_than_the_true_rain_layer():
    x = _img("camera", 96, gray=True)
    s = add_rain(x, np.random.default_rng(4))
    luma = torch.from_numpy(s.y[0].astype(np.float64))
    angle = math.radians(s.record["rain_angle"])
    r = rain_layer(luma, angle)
    assert r.shape == luma.shape and r.min() >= 0 and (r <= luma + 1e-12).all()
    truth = (luma - torch.from_numpy(x[0].astype(np.float64))).clamp(min=0)  # the layer the clipping left
    zero = torch.zeros_like(luma)
    # a convex model: its minimiser beats every feasible point, the true layer and no rain among them
    assert objective(luma, r, angle) <= objective(luma, truth, angle) * (1 + 1e-3)
    assert objective(luma, r, angle) < objective(luma, zero, angle)
    # converged to what matters: 1500 iterations lower the objective by under 0.5 % (measured: 0.22 %)
    assert objective(luma, rain_layer(luma, angle, iterations=1500), angle) >= objective(luma, r, angle) * (1 - 5e-3)


@pytest.mark.parametrize("name,seed", [("coffee", 2), ("chelsea", 5)])
def test_dgsm_derains_colour_images(name, seed):
    x = _img(name)
    s = add_rain(x, np.random.default_rng(seed))
    out = dgsm_derain(s.y)
    assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    hwc = lambda a: a.transpose(1, 2, 0)  # noqa: E731
    assert psnr(hwc(out), hwc(x)) > psnr(hwc(s.y), hwc(x)) + 1.0
    # one achromatic rain layer: every channel loses the same light (where nothing was clipped)
    removed = s.y - out
    inside = (out > 0).all(0)
    assert np.allclose(removed[0][inside], removed[2][inside], atol=1e-5)


def test_dgsm_refuses_an_image_without_channels():
    with pytest.raises(ValueError, match="dgsm_derain needs"):
        dgsm_derain(np.zeros((8, 8), np.float32))


def test_dgsm_is_a_derain_method_and_runs_only_when_asked():
    assert DGSM in method_names("derain") and DGSM not in method_names("dehaze")
    y = add_rain(_img("coffee", 64), np.random.default_rng(0)).y
    model = build_model(ModelConfig(stages=2, denoiser_width=8, proxy_width=8), 3, task="derain").eval()
    assert DGSM in restore_task("derain", y, model, torch.device("cpu")).outputs
    assert DGSM not in restore_task("derain", y, model, torch.device("cpu"), names=("input", "learned")).outputs
