"""The model file: identical weights give identical bytes (DVC and the tune study key hash it),
and what is saved loads back exactly."""
from __future__ import annotations

import pytest
import torch

from pipeline.checkpoint import load_model, save_model
from pipeline.io import InputError
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


class Payload:
    """What an untrusted file may carry: code that runs when unpickled."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_file_carrying_code_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"format": "hyperguide-model-1", "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError) as err:
        load_model(tmp_path / "evil.pt")
    message = str(err.value)
    assert "evil.pt" in message and "refused" in message and "\n" not in message
    assert "weights_only" not in message and "this must never run" not in capsys.readouterr().out


def test_a_truncated_file_is_refused_in_one_line(tmp_path, test_params):
    model = build_model(test_params.model, 1, task="deblur")
    save_model(tmp_path / "model.pt", model, test_params.model, 1, "deblur")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pt: not a readable model checkpoint") as err:
        load_model(tmp_path / "cut.pt")
    assert "\n" not in str(err.value)
