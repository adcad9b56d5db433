"""The benchmark command on real-style pairs (rain/norain, hazy/clear): the metrics shape, every
method, and mismatched pairs refused."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from pipeline import io
from pipeline.checkpoint import save_model
from pipeline.config import ModelConfig
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.metrics import PSNR_CAP_DB
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


def test_an_identical_pair_is_capped_not_a_crash(tmp_path):
    """A rain image equal to its clean one (it happens in real data) has an infinite PSNR: it is
    capped at PSNR_CAP_DB, metrics.json stays valid JSON and names the capped pair."""
    d = make_pairs(tmp_path, "derain")
    (d / "rain" / "rain-1.png").write_bytes((d / "norain" / "norain-1.png").read_bytes())
    main(["--task", "derain", "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"),
          "--methods", "input,classical", "--quiet"])
    text = (d / "out" / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    assert metrics["psnr_capped"] == {"input": ["norain-1"]} and metrics["psnr_cap_db"] == PSNR_CAP_DB
    rows = {(r["image"], r["method"]): float(r["psnr"]) for r in io.read_csv(d / "out" / "per_image.csv")}
    assert rows[("norain-1", "input")] == PSNR_CAP_DB and rows[("norain-2", "input")] < PSNR_CAP_DB
    assert not list((d / "out").glob("*.partial.jsonl"))  # the journal is gone once the tables are written


def _resumed(caplog) -> str:
    """The benchmark's closing log line (it says how many samples came from the journal)."""
    return [r.getMessage() for r in caplog.records if "resumed from its journal" in r.getMessage()][-1]


def test_a_crashed_run_resumes_from_its_journal_and_ends_as_an_uninterrupted_one(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    d = make_pairs(tmp_path, "derain", names=("coffee", "astronaut", "chelsea"))
    run = ["--task", "derain", "--pairs", str(d), "--model", str(d / "learned.pt"), "--quiet"]
    main([*run, "--out", str(d / "whole")])
    # a pair that cannot be read crashes the run after the first sample was scored and journaled
    good = (d / "rain" / "rain-2.png").read_bytes()
    (d / "rain" / "rain-2.png").write_bytes(b"not a png")
    with pytest.raises(io.InputError, match="rain-2.png"):
        main([*run, "--out", str(d / "out")])
    journal = d / "out" / "per_image.partial.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["sample_id"] == "norain-1"  # the header, sample 1
    with journal.open("a") as f:
        f.write('{"sample_id": "norain-2", "rows": [')  # a kill mid-append: the cut line is dropped
    (d / "rain" / "rain-2.png").write_bytes(good)
    main([*run, "--out", str(d / "out")])
    assert "3 images, 1 of 3 samples resumed" in _resumed(caplog)
    assert (d / "out" / "per_image.csv").read_bytes() == (d / "whole" / "per_image.csv").read_bytes()
    assert (d / "out" / "metrics.json").read_bytes() == (d / "whole" / "metrics.json").read_bytes()
    assert not journal.exists()


def test_a_journal_of_other_settings_or_other_data_is_not_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    d = make_pairs(tmp_path, "derain")
    run = ["--task", "derain", "--pairs", str(d), "--model", str(d / "learned.pt"), "--quiet", "--out", str(d / "out")]
    clean2 = (d / "norain" / "norain-2.png").read_bytes()
    (d / "norain" / "norain-2.png").write_bytes(b"broken")
    with pytest.raises(io.InputError):
        main([*run, "--methods", "input,classical"])
    (d / "norain" / "norain-2.png").write_bytes(clean2)
    main([*run, "--methods", "input,learned"])  # other methods: the journal is started over
    assert "written under other settings, starting over" in caplog.text
    assert "0 of 2 samples resumed" in _resumed(caplog)
    assert set(json.loads((d / "out" / "metrics.json").read_text())["methods"]) == {"input", "learned"}
    # same settings, but the first pair's rain image changed since it was journaled: run again
    (d / "norain" / "norain-2.png").write_bytes(b"broken")
    with pytest.raises(io.InputError):
        main([*run, "--methods", "input,learned"])
    (d / "norain" / "norain-2.png").write_bytes(clean2)
    (d / "rain" / "rain-1.png").write_bytes((d / "norain" / "norain-1.png").read_bytes())
    caplog.clear()
    main([*run, "--methods", "input,learned"])
    assert "0 of 2 samples resumed" in _resumed(caplog) and "starting over" not in caplog.text
    assert json.loads((d / "out" / "metrics.json").read_text())["psnr_capped"] == {"input": ["norain-1"]}
