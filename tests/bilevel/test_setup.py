"""The training setup on a real prepared + degraded split (the prepare and degrade stages of the
test profile): what it reads, that it is a function of the seed alone, that it leaves the global
torch generator alone, and that training through it resumes from its checkpoint."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import profile_dict
from pipeline import datasets
from pipeline.bilevel.setup import build_training, config_key, train
from pipeline.config import params_from_dict
from pipeline.generators.seeds import derive_seed
from pipeline.models.factory import build_model
from pipeline.patches import PatchSampler, TaskPatchSampler
from project_copy import ROOT, project_env


@pytest.fixture(scope="module", params=["deblur", "derain"])
def split(request, tmp_path_factory):
    """``(params, prepared, degraded)`` of the test profile for one task, written by the stages."""
    task, cwd = request.param, tmp_path_factory.mktemp(request.param)
    (cwd / "params.yaml").write_text(yaml.safe_dump(profile_dict(), sort_keys=False))
    for stage, args in (("prepare", ["--out", "prepared"]), ("degrade", ["--prepared", "prepared", "--out", "degraded"])):
        subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", "--task", task, *args], cwd=cwd,
                       env=project_env(ROOT), check=True, capture_output=True, timeout=300)
    return params_from_dict(profile_dict(), task), cwd / "prepared", cwd / "degraded"


def test_it_reads_the_train_images_and_a_spread_of_the_val_samples(split):
    params, prepared, degraded = split
    setup = build_training(params, prepared, degraded)
    manifest = datasets.read_manifest(prepared)
    c = setup.channels
    assert c == (1 if params.base.task == "deblur" else 3) == int(manifest[0]["channels"])
    assert len(setup.images) == sum(r["split"] == "train" for r in manifest) == 4
    assert all(im.dtype == np.float32 and im.ndim == 3 and im.shape[0] == c for im in setup.images)
    rows = datasets.sample_rows(degraded, "val")
    assert 1 <= len(setup.val) <= min(len(rows), params.train.val_samples)
    for s in setup.val:
        _, _, h, w = s.y.shape
        assert s.y.shape == s.x.shape == (1, c, h, w) and s.target.shape == (1, 1, h, w)
        assert (s.kernel is not None) == (params.base.task == "deblur")
    sampler_type = PatchSampler if params.base.task == "deblur" else TaskPatchSampler
    assert isinstance(setup.sampler, sampler_type)
    p = params.train.patch_size
    batch = setup.sampler.degraded_batch(2)
    assert batch["y"].shape == batch["x"].shape == (2, c, p, p) and batch["target"].shape == (2, 1, p, p)
    assert len(setup.config_key) == 16 and setup.model.activation_checkpointing == params.train.activation_checkpointing


def test_the_same_seed_gives_the_same_start_and_another_seed_another(split):
    params, prepared, degraded = split
    a, b = build_training(params, prepared, degraded), build_training(params, prepared, degraded)
    assert a.config_key == b.config_key
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    first_a, first_b = a.sampler.degraded_batch(2), b.sampler.degraded_batch(2)
    assert all(torch.equal(first_a[k], first_b[k]) for k in first_a)

    other = dataclasses.replace(params, base=dataclasses.replace(params.base, seed=params.base.seed + 1))
    c = build_training(other, prepared, degraded)
    assert c.config_key != a.config_key
    wc = c.model.state_dict()
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert not torch.equal(c.sampler.degraded_batch(2)["y"], first_a["y"])


def test_the_weights_are_those_of_a_global_seeding_and_the_global_generator_is_left_alone(split):
    """The forked generator draws what ``torch.manual_seed(init seed)`` did before the setup
    moved into the library, so models trained before and after are the same."""
    params, prepared, degraded = split
    torch.manual_seed(7)
    before = torch.get_rng_state()
    setup = build_training(params, prepared, degraded)
    assert torch.equal(torch.get_rng_state(), before)

    torch.manual_seed(derive_seed(params.base.seed, "init") % 2**31)
    reference = build_model(params.model, setup.channels, task=params.base.task).state_dict()
    got = setup.model.state_dict()
    assert all(torch.equal(got[k], reference[k]) for k in reference)


def test_the_key_follows_the_data_and_the_params(split, tmp_path):
    params, prepared, degraded = split
    key = config_key(params, prepared, degraded)
    longer = dataclasses.replace(params, train=dataclasses.replace(params.train, steps=params.train.steps + 1))
    assert config_key(longer, prepared, degraded) != key
    fewer = tmp_path / "degraded"
    fewer.mkdir()
    lines = (degraded / "samples.csv").read_text().splitlines(keepends=True)
    (fewer / "samples.csv").write_text("".join(lines[:-1]))
    assert config_key(params, prepared, fewer) != key


def test_training_resumes_from_its_checkpoint_to_the_same_model(split, tmp_path):
    params, prepared, degraded = split
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, pretrain_steps=2, steps=2,
                                                                   checkpoint_every=2, log_every=2))
    ckpt = tmp_path / "train.pt"
    trainer, model, channels, seconds = train(params, prepared, degraded, ckpt, torch.device("cpu"))
    assert [(r["phase"], r["step"]) for r in trainer.history] == [("pretrain", 2), ("bilevel", 2)]
    assert trainer.resumed_from is None and seconds > 0 and ckpt.exists()
    assert channels == datasets.channels(prepared) and np.isfinite(trainer.history[-1]["val_psnr"])
    again, model2, _, _ = train(params, prepared, degraded, ckpt, torch.device("cpu"))
    assert again.resumed_from == 2 and again.history == trainer.history
    w, w2 = model.state_dict(), model2.state_dict()
    assert all(torch.equal(w[k], w2[k]) for k in w)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_stays_finite_and_matches_full_precision(split, tmp_path, amp):
    """``train.amp`` on CPU: every logged loss finite and the validation PSNR within 0.1 dB of the
    float32 run of the same seed for bf16. fp16 goes through the loss scaler (kept in the
    checkpoint), which skips the first steps while it lowers its scale from 2**16: in 40 steps that
    can cost a few tenths of a dB, so it gets 0.5 dB."""
    params, prepared, degraded = split
    steps = dict(pretrain_steps=20, steps=20, checkpoint_every=10, log_every=5)
    runs = {}
    for mode in ("off", amp):
        p = dataclasses.replace(params, train=dataclasses.replace(params.train, amp=mode, **steps))
        trainer, _, _, _ = train(p, prepared, degraded, tmp_path / mode / "ckpt.pt", torch.device("cpu"))
        runs[mode] = trainer
    mixed, full = runs[amp], runs["off"]
    assert mixed.amp == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp] and full.amp is None
    losses = [v for row in mixed.history for k, v in row.items() if "loss" in k]
    assert losses and all(np.isfinite(losses))
    final = [row["val_psnr"] for t in (mixed, full) for row in t.history if row["phase"] == "bilevel" and "val_psnr" in row]
    tolerance = 0.1 if amp == "bf16" else 0.5
    assert np.isfinite(final).all() and abs(final[len(final) // 2 - 1] - final[-1]) < tolerance, final
    assert (mixed.scaler is not None) == (amp == "fp16")
    if amp == "fp16":
        saved = torch.load(tmp_path / amp / "ckpt.pt", weights_only=True)["scaler"]
        assert saved["scale"] == mixed.scaler.get_scale() <= 2.0**16  # a resume continues with the scale reached


def test_the_direct_cnn_control_trains_one_phase_of_all_the_steps_and_resumes_bit_for_bit(split, tmp_path):
    """``model.guidance: direct``: a :class:`DirectCNN` trained for ``pretrain_steps + steps`` on
    the degraded batches in one phase, checkpointed and resumed as the unfolded model is."""
    from conftest import Interrupted, interrupt_at
    from pipeline.bilevel.trainer import DirectTrainer
    from pipeline.models.direct import DirectCNN

    params, prepared, degraded = split
    params = dataclasses.replace(
        params, model=dataclasses.replace(params.model, guidance="direct"),
        train=dataclasses.replace(params.train, pretrain_steps=3, steps=3, checkpoint_every=2, log_every=2))
    trainer, model, _, _ = train(params, prepared, degraded, tmp_path / "a.pt", torch.device("cpu"))
    assert isinstance(trainer, DirectTrainer) and isinstance(model, DirectCNN)
    assert [(r["phase"], r["step"]) for r in trainer.history] == [("direct", 2), ("direct", 4), ("direct", 6)]
    assert np.isfinite(trainer.history[-1]["val_psnr"]) and trainer.pretrained == {} and trainer.phase == "done"
    with pytest.raises(Interrupted):  # stopped at step 4 before its checkpoint: the one of step 2 stays
        train(params, prepared, degraded, tmp_path / "b.pt", torch.device("cpu"), log_fn=interrupt_at("direct", 4))
    again, model2, _, _ = train(params, prepared, degraded, tmp_path / "b.pt", torch.device("cpu"))
    untimed = lambda history: [{k: v for k, v in r.items() if k != "seconds_per_step"} for r in history]  # noqa: E731
    assert again.resumed_from == 2 and untimed(again.history) == untimed(trainer.history)
    w, w2 = model.state_dict(), model2.state_dict()
    assert all(torch.equal(w[k], w2[k]) for k in w)
