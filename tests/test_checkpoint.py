"""The model file: identical weights give identical bytes (DVC and the tune study key hash it),
and what is saved loads back exactly. Truncated and code-carrying files refused:
tests/hostile/test_model_files.py."""
from __future__ import annotations

import torch

from pipeline.checkpoint import load_model, save_model
from pipeline.models.factory import build_model


def test_same_weights_same_bytes_whatever_the_file_name(tmp_path, test_params):
    torch.manual_seed(0)
    model = build_model(test_params.model, 1, task="deblur")
    paths = [tmp_path / "a" / "model.pt", tmp_path / "b" / "other-name.pt"]
    for p in paths:
        save_model(p, model, test_params.model, 1, "deblur", extra={"config_key": "k"})
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    assert b".tmp-" not in first  # the atomic write's temporary name never reaches the archive


def test_round_trip_restores_every_weight(tmp_path, test_params):
    torch.manual_seed(1)
    model = build_model(test_params.model, 1, task="deblur")
    save_model(tmp_path / "model.pt", model, test_params.model, 1, "deblur")
    loaded, _, state = load_model(tmp_path / "model.pt", task="deblur")
    assert state["task"] == "deblur" and int(state["channels"]) == 1
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
