"""The direct_cnn control's network: its size follows the unfolded model it stands beside, it is
a residual map of the observation alone, and it goes through the model file like any model."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import ROOT
from pipeline.checkpoint import load_control, save_model
from pipeline.io import InputError
from pipeline.models.direct import DirectCNN, conv_parameters, matched_layers
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics
from stages.common import load_params


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("task", ["deblur", "derain", "dehaze"])
def test_it_has_the_unfolded_models_parameter_count_to_within_one_layer(task):
    cfg = load_params(ROOT / "params.yaml", task).model
    channels = 1 if task == "deblur" else 3
    learned = build_model(cfg, channels, task=task)
    direct = build_model(dataclasses.replace(cfg, guidance="direct"), channels, task=task)
    assert isinstance(direct, DirectCNN) and direct.guidance_mode == "direct"
    per_layer = cfg.denoiser_width ** 2 * 9 + cfg.denoiser_width
    assert abs(n_params(direct) - n_params(learned)) <= per_layer / 2
    assert n_params(direct) == conv_parameters(channels, cfg.denoiser_width, direct.layers)


def test_matched_layers_picks_the_nearest_count():
    for target in (1000, 50_000, 66_535, 89_388):
        n = matched_layers(target, 1, 32)
        best = min(range(2, 40), key=lambda k: abs(conv_parameters(1, 32, k) - target))
        assert n == best


def test_it_maps_the_observation_alone_and_starts_as_the_identity_when_its_last_layer_is_zero():
    torch.manual_seed(0)
    grey = DirectCNN(1, 8, 4, (1, 2))
    y1 = torch.rand(2, 1, 20, 24)
    blurs = [torch.ones(5, 5) / 25, torch.eye(7) / 7]
    outs = [grey(BlurPhysics(y1, k)).x for k in blurs]  # the blur is not read: only physics.y
    assert outs[0].shape == y1.shape and torch.equal(outs[0], outs[1]) and torch.equal(outs[0], grey(y1).x)
    net = DirectCNN(3, 8, 4, (1, 2))
    y = torch.rand(2, 3, 20, 24)
    out = net(y)
    assert out.x.shape == y.shape and out.guidance == [] and out.rhos.numel() == 0
    last = net.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    assert torch.equal(net(y).x, y)
    assert net.estimate_guidance(y).shape == (2, 1, 20, 24) and not net.estimate_guidance(y).any()
    with pytest.raises(ValueError, match=">= 2 layers"):
        DirectCNN(1, 8, 1)


def test_the_model_file_round_trip_and_the_control_check(tmp_path):
    cfg = dataclasses.replace(load_params(ROOT / "params.yaml", "derain").model, guidance="direct")
    torch.manual_seed(1)
    net = build_model(cfg, 3, task="derain")
    save_model(tmp_path / "model.pt", net, cfg, 3, "derain")
    again = load_control(tmp_path / "model.pt", "derain", "direct_cnn")
    y = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(y).x, net.eval()(y).x)
    with pytest.raises(InputError, match="not 'none'"):  # a direct CNN does not pass for another control
        load_control(tmp_path / "model.pt", "derain", "no_guidance")
