"""Training on your own real pairs (``prepare.source: pairs``): prepare keeps each pair, degrade
takes the real observations as they are, train learns the proxy from the outer loss alone (no
guidance truth), evaluate and its metrics say the data were real. Bad pair folders are refused."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, profile_dict, project_env
from pipeline import io
from pipeline.checkpoint import load_model
from pipeline.config import ConfigError, params_from_dict
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.synthesis import TaskSpec, degrade_task

NAMES = ("coffee", "astronaut", "chelsea", "rocket", "camera", "coins")


def make_pair_folder(root, names=NAMES, side: int = 48):
    """``root/rain`` + ``root/norain`` in Rain100H's names (``rain-1.png`` / ``norain-1.png``)."""
    for i, name in enumerate(names, 1):
        x = limit_size(to_channels(load_skimage(name), gray=False), side)
        s = degrade_task(np.ascontiguousarray(x.transpose(2, 0, 1)), TaskSpec("derain"), np.random.default_rng(i))
        io.write_image(root / "rain" / f"rain-{i}.png", s.y.transpose(1, 2, 0), bits=16)
        io.write_image(root / "norain" / f"norain-{i}.png", x, bits=16)
    return root


def pair_params(folder) -> dict:
    params = profile_dict()
    params["base"]["task"] = "derain"
    params["tasks"]["run"], params["tasks"]["controls"] = ["derain"], ["no_guidance"]
    params["tasks"]["derain"]["prepare"] = {"source": "pairs", "folders": [str(folder)], "holdout": [],
                                            "split": {"test": 2, "val": 1}}
    return params


def run_stage(cwd, stage, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", "--task", "derain", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def test_real_pairs_train_and_evaluate_through_the_stages(tmp_path):
    pairs = make_pair_folder(tmp_path / "pairs")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(pair_params(pairs)))
    data = tmp_path / "data" / "derain"
    for stage in ("prepare", "degrade"):  # every path the task's default: data/derain/...
        res = run_stage(tmp_path, stage)
        assert res.returncode == 0, res.stderr[-2000:]
    manifest = io.read_csv(data / "prepared" / "manifest.csv")
    assert sorted(r["name"] for r in manifest) == sorted(f"norain-{i}" for i in range(1, 7))
    assert [r["split"] for r in manifest].count("test") == 2 and [r["split"] for r in manifest].count("val") == 1
    for r in manifest:  # each clean image beside its own observation, at the same size
        observed = io.read_image(data / "prepared" / "observed" / f"{r['name']}.png", gray=False)
        assert observed.shape == (int(r["height"]), int(r["width"]), 3)
        assert r["observed"].endswith(f"rain-{r['name'].split('-')[1]}.png")
    samples = io.read_csv(data / "degraded" / "samples.csv")
    assert {s["split"] for s in samples} == {"test", "val"} and len(samples) == 3
    for s in samples:  # the real observation as it is, and no guidance truth
        arrays = io.load_npz(data / "degraded" / "samples" / f"{s['sample_id']}.npz")
        assert set(arrays) == {"y"} and s["source"] == "pair"
        observed = io.read_image(data / "prepared" / "observed" / f"{s['image']}.png", gray=False)
        np.testing.assert_array_equal(arrays["y"], observed.transpose(2, 0, 1))

    for extra in ((), ("--control", "no_guidance")):
        res = run_stage(tmp_path, "train", "--seed", "0", *extra)
        assert res.returncode == 0, res.stderr[-2000:]
    history = io.read_csv(tmp_path / "models" / "derain" / "seed-0" / "history.csv")
    assert {r["phase"] for r in history} == {"pretrain", "bilevel"}
    assert all(not r.get("guidance_loss") for r in history)  # no inner problem: no guidance truth
    assert all(np.isfinite(float(r["val_psnr"])) for r in history if r.get("val_psnr"))
    # the proxy learnt from the outer loss alone: its weights moved from their initial values
    from pipeline.bilevel.setup import init_model
    params = params_from_dict(pair_params(pairs), "derain")
    start = init_model(params.model, 3, "derain", 0).proxy.state_dict()
    trained, _, _ = load_model(tmp_path / "models" / "derain" / "seed-0" / "model.pt", task="derain")
    assert any(not torch.equal(start[k], v) for k, v in trained.proxy.state_dict().items())

    res = run_stage(tmp_path, "evaluate", "--out", "results")
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["data"] == "real pairs" and metrics["n_images"] == 2
    assert {"learned", "no_guidance", "classical", "input"} <= set(metrics["methods"])
    assert all(np.isfinite(m["psnr_mean"]) for m in metrics["methods"].values())
    assert io.read_csv(tmp_path / "results" / "guidance.csv") == []  # no truth to score the proxy against


def test_a_pair_folder_that_does_not_match_is_refused_and_writes_nothing(tmp_path):
    pairs = make_pair_folder(tmp_path / "pairs", names=NAMES[:4])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(pair_params(pairs)))
    (pairs / "rain" / "rain-3.png").rename(pairs / "rain" / "rain-9.png")
    res = run_stage(tmp_path, "prepare", "--out", "prepared")
    assert res.returncode == 2 and "rain-9.png" in res.stderr and "norain-3.png" in res.stderr
    assert not (tmp_path / "prepared").exists()
    (pairs / "rain" / "rain-9.png").rename(pairs / "rain" / "rain-3.png")
    io.write_image(pairs / "rain" / "rain-2.png", np.zeros((20, 30, 3)))  # a partner of another size
    res = run_stage(tmp_path, "prepare", "--out", "prepared")
    assert res.returncode == 2 and "rain-2.png" in res.stderr and "30x20" in res.stderr
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("change, key", [
    ({"base": {"task": "deblur"}}, "prepare.source"),
    ({"model": {"guidance": "oracle"}}, "model.guidance"),
    ({"train": {"strategy": "implicit"}}, "train.strategy"),
])
def test_settings_that_real_pairs_cannot_serve_are_refused_by_name(change, key, tmp_path):
    params = pair_params(tmp_path)
    params["prepare"] = params["tasks"]["derain"].pop("prepare")
    params["tasks"]["run"] = [change.get("base", {}).get("task", "derain")]
    for section, values in change.items():
        params[section].update(values)
    with pytest.raises(ConfigError, match=key):
        params_from_dict(params)
