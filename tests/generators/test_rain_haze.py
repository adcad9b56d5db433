"""Rain and haze generators: ranges, reproducibility by seed, consistent ground truth, bad depth."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, DegradeConfig, HazeConfig, RainConfig
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.generators.haze import add_haze, depth_proxy
from pipeline.generators.rain import RainSpec, add_rain, density_map, heavy_spec, streak_layer, streak_layers
from pipeline.synthesis import task_spec


@pytest.fixture(scope="module")
def clean():
    return np.ascontiguousarray(limit_size(to_channels(load_skimage("coffee"), gray=False), 64).transpose(2, 0, 1))


def test_rain_streaks_are_non_negative_and_the_output_in_range(clean):
    for heavy in (False, True):
        s = add_rain(clean, np.random.default_rng(0), RainSpec(heavy=heavy))
        assert s.streaks.min() >= 0 and s.streaks.max() > 0.1
        assert s.y.min() >= 0 and s.y.max() <= 1 and s.y.shape == clean.shape
        if not heavy:  # light rain only adds light
            assert np.all(s.y >= clean - 1e-6)
        else:
            assert 0.6 <= s.record["rain_veil"] <= 0.9


def test_rain_density_map_is_consistent_with_the_layer(clean):
    layer, _ = streak_layer(np.random.default_rng(1), clean.shape[-2:])
    dens = density_map(layer, 4.0)
    assert dens.shape == (1, *layer.shape)
    assert dens.mean() == pytest.approx(layer.mean(), rel=1e-4)  # smoothing preserves the amount of rain
    empty = density_map(np.zeros_like(layer), 4.0)
    assert np.all(empty == 0)
    # where there are more streaks the map is higher
    corr = np.corrcoef(dens[0].ravel(), layer.ravel())[0, 1]
    assert corr > 0.2


def test_rain_and_haze_are_reproducible_by_seed(clean):
    a, b = add_rain(clean, np.random.default_rng(5)), add_rain(clean, np.random.default_rng(5))
    assert np.array_equal(a.y, b.y) and a.record == b.record
    assert not np.array_equal(a.y, add_rain(clean, np.random.default_rng(6)).y)
    h1, h2 = add_haze(clean, np.random.default_rng(5)), add_haze(clean, np.random.default_rng(5))
    assert np.array_equal(h1.y, h2.y) and h1.record == h2.record


def test_haze_parameters_stay_in_their_ranges(clean):
    for seed in range(5):
        s = add_haze(clean, np.random.default_rng(seed))
        assert HazeConfig.beta[0] <= s.beta <= HazeConfig.beta[1]
        assert HazeConfig.airlight[0] <= s.airlight.min() and s.airlight.max() <= HazeConfig.airlight[1]
        assert 0 < s.t.min() and s.t.max() <= 1.0
    d = depth_proxy(np.random.default_rng(0), (40, 30))
    assert d.shape == (40, 30) and d.min() >= 0 and d.max() <= 1
    assert d[:5].mean() > d[-5:].mean()  # far at the top


def test_a_depth_map_of_the_wrong_size_is_refused(clean):
    with pytest.raises(ValueError, match=r"depth map is 10x10, the image is 43x64"):
        add_haze(clean, np.random.default_rng(0), depth=np.ones((10, 10)))
    ok = add_haze(clean, np.random.default_rng(0), depth=np.linspace(0, 5, clean.shape[1])[:, None] * np.ones(clean.shape[2]))
    assert ok.record["haze_depth"] == "given"


def test_light_rain_is_one_layer_with_the_same_draws(clean):
    """The light style keeps the committed stream: one layer, exactly streak_layer's draws."""
    a, ra = streak_layers(np.random.default_rng(3), clean.shape[1:])
    b, rb = streak_layer(np.random.default_rng(3), clean.shape[1:])
    assert np.array_equal(a, b) and ra == rb and "rain_layers" not in ra


def test_heavy_rain_has_several_layers_more_rain_and_a_veil(clean):
    light = [add_rain(clean, np.random.default_rng(s)) for s in range(6)]
    heavy = [add_rain(clean, np.random.default_rng(s), heavy_spec()) for s in range(6)]
    for s in heavy:
        assert 2 <= s.record["rain_layers"] <= 4 and len(s.record["rain_layer_angles"].split(";")) == s.record["rain_layers"]
        assert 0.6 <= s.veil <= 0.9 and s.y.min() >= 0 and s.y.max() <= 1
        assert (s.streaks >= 0).all() and s.streaks.max() <= 1
    # more streak light per image on average (several layers drawn from the same per-layer ranges)
    assert np.mean([s.streaks.mean() for s in heavy]) > 1.5 * np.mean([s.streaks.mean() for s in light])
    again = add_rain(clean, np.random.default_rng(2), heavy_spec())
    assert np.array_equal(again.y, heavy[2].y) and again.record == heavy[2].record


def test_rain_style_is_validated_and_chooses_the_spec():
    assert task_spec("derain", DegradeConfig(rain=RainConfig(style="light"))).rain.layers == (1, 1)
    assert task_spec("derain", DegradeConfig()).rain.layers == (2, 4)  # heavy: the default, as in params.yaml
    with pytest.raises(ConfigError, match="degrade.rain.style"):
        RainConfig(style="hevy")
