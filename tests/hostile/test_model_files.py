"""Hostile model files: one carrying code (never unpickled: refused in one line, the code never
runs), a truncated one, a model for another task, a guided model given as the unguided ablation.

Other bad-model-file cases, inside tests that need their own setup:
- tests/bilevel/test_task_training.py::test_a_dehaze_model_from_before_the_transmission_correction_is_refused
- tests/stages/test_enhance.py::test_model_from_its_mlflow_uri_gives_the_checkpoints_output
  (a models:/ URI that names no model)
"""
from __future__ import annotations

import pytest
import torch

from enhance_cli import assets, run_in_process, tiny_checkpoint  # noqa: F401  (assets: a fixture)
from pair_folders import make_pairs
from pipeline import io
from pipeline.checkpoint import load_model, save_model
from pipeline.io import InputError
from pipeline.models.factory import build_model
from stages.benchmark import main


# --------------------------------------------------------------------------- read by pipeline.checkpoint


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


# --------------------------------------------------------------------------- given to a command


def test_truncated_checkpoint_is_refused(assets, tmp_path, caplog):
    cut = tmp_path / "cut.pt"
    data = (assets / "model.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.png"
    code = run_in_process(caplog, "--in", str(assets / "in" / "colour.png"), "--out", str(out),
                          "--kernel", str(assets / "kernel.npy"), "--model", str(cut))
    assert code == 2 and "cut.pt" in caplog.text and "not a readable model checkpoint" in caplog.text
    assert not out.exists()


def test_checkpoint_for_another_task_is_refused(assets, tmp_path, caplog):
    tiny_checkpoint(tmp_path / "derain.pt", task="derain")
    out = tmp_path / "out.png"
    common = ["--in", str(assets / "in" / "colour.png"), "--out", str(out), "--kernel", str(assets / "kernel.npy")]
    assert run_in_process(caplog, *common, "--model", str(tmp_path / "derain.pt")) == 2
    assert "a model for task 'derain', not 'deblur'" in caplog.text
    caplog.clear()
    assert run_in_process(caplog, *common, "--task", "dehaze", "--model", str(assets / "model.pt")) == 2
    assert "a model for task 'deblur', not 'dehaze'" in caplog.text
    assert not out.exists()


def test_a_guided_model_as_the_ablation_is_refused_before_anything_is_written(tmp_path):
    d = make_pairs(tmp_path, "derain")
    with pytest.raises(io.InputError, match="learned.pt: trained with guidance 'learned', not 'none'"):
        main(["--task", "derain", "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"),
              "--ablation-model", str(d / "learned.pt"), "--quiet"])
    assert not (d / "out").exists()
