"""The benchmark command on real-style pairs (rain/norain, hazy/clear): the metrics shape, every
method, and mismatched pairs refused."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline import io
from pipeline.checkpoint import save_model
from pipeline.config import ModelConfig
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.models.factory import build_model
from pipeline.synthesis import TaskSpec, degrade_task
from stages.benchmark import main

CFG = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)
LAYOUT = {"derain": ("rain", "norain"), "dehaze": ("hazy", "clear")}


def make_pairs(root, task: str, names=("coffee", "astronaut")):
    degraded, clean = LAYOUT[task]
    for i, name in enumerate(names):
        x = limit_size(to_channels(load_skimage(name), gray=False), 40)
        s = degrade_task(np.ascontiguousarray(x.transpose(2, 0, 1)), TaskSpec(task), np.random.default_rng(i))
        io.write_image(root / degraded / f"{degraded}-{i + 1}.png", s.y.transpose(1, 2, 0))
        io.write_image(root / clean / f"{clean}-{i + 1}.png", x)  # Rain100H-style prefixes
    for guidance in ("learned", "none"):
        cfg = ModelConfig(**{**CFG.__dict__, "guidance": guidance})
        save_model(root / f"{guidance}.pt", build_model(cfg, 3, task=task), cfg, 3, task)
    return root


@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_benchmark_on_pairs_writes_every_method(task, tmp_path):
    d = make_pairs(tmp_path, task)
    main(["--task", task, "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"),
          "--ablation-model", str(d / "none.pt"), "--quiet"])
    metrics = json.loads((d / "out" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["noise_levels"] == [] and metrics["n_images"] == 2
    assert set(metrics["methods"]) == {"input", "learned", "no_guidance", "classical"}
    for name, m in metrics["methods"].items():
        assert math.isfinite(m["psnr_mean"]) and 0 < m["ssim_mean"] <= 1, name
    rows = io.read_csv(d / "out" / "per_image.csv")
    assert len(rows) == 8 and {r["image"] for r in rows} == {f"{LAYOUT[task][1]}-1", f"{LAYOUT[task][1]}-2"}
    mean = np.mean([float(r["psnr"]) for r in rows if r["method"] == "classical"])
    assert mean == pytest.approx(metrics["methods"]["classical"]["psnr_mean"])
    assert "| mean |" in (d / "out" / "table.md").read_text()
    main(["--task", task, "--pairs", str(d), "--out", str(d / "one"), "--model", str(d / "learned.pt"),
          "--limit", "1", "--methods", "input,classical", "--quiet"])
    assert json.loads((d / "one" / "metrics.json").read_text())["n_images"] == 1


def test_mismatched_pairs_and_missing_arguments_are_refused(tmp_path):
    d = make_pairs(tmp_path, "derain")
    (d / "norain" / "norain-2.png").rename(d / "norain" / "norain-3.png")
    with pytest.raises(io.InputError, match="rain-2.png"):
        main(["--task", "derain", "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"), "--quiet"])
    assert not (d / "out").exists()
    with pytest.raises(SystemExit):
        main(["--task", "dehaze", "--out", str(d / "out")])  # no --pairs
    with pytest.raises(io.InputError, match="not 'dehaze'"):  # a rain model for haze
        make_pairs(tmp_path / "h", "dehaze")
        main(["--task", "dehaze", "--pairs", str(tmp_path / "h"), "--out", str(d / "o"), "--model", str(d / "learned.pt")])


def test_a_guided_model_as_the_ablation_is_refused_before_anything_is_written(tmp_path):
    d = make_pairs(tmp_path, "derain")
    with pytest.raises(io.InputError, match="learned.pt: trained with guidance 'learned', not 'none'"):
        main(["--task", "derain", "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"),
              "--ablation-model", str(d / "learned.pt"), "--quiet"])
    assert not (d / "out").exists()
