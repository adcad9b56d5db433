"""The benchmark command on real-style pairs (rain/norain, hazy/clear): the metrics shape, every
method, a crashed run resumed from its journal. Mismatched and identical pairs, a wrong model:
tests/hostile/test_pairs.py and test_model_files.py."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from pair_folders import LAYOUT, make_pairs
from pipeline import io
from stages.benchmark import main


@pytest.mark.parametrize("task", ["derain", "dehaze"])
def test_benchmark_on_pairs_writes_every_method(task, tmp_path):
    d = make_pairs(tmp_path, task)
    main(["--task", task, "--pairs", str(d), "--out", str(d / "out"), "--model", str(d / "learned.pt"),
          "--ablation-model", str(d / "none.pt"), "--quiet"])
    metrics = json.loads((d / "out" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["noise_levels"] == [] and metrics["n_images"] == 2
    extra = {"dgsm"} if task == "derain" else set()  # the published classical derain method
    assert set(metrics["methods"]) == {"input", "learned", "no_guidance", "classical", *extra}
    for name, m in metrics["methods"].items():
        assert math.isfinite(m["psnr_mean"]) and 0 < m["ssim_mean"] <= 1, name
    rows = io.read_csv(d / "out" / "per_image.csv")
    assert len(rows) == 2 * (4 + len(extra)) and {r["image"] for r in rows} == {f"{LAYOUT[task][1]}-1", f"{LAYOUT[task][1]}-2"}
    mean = np.mean([float(r["psnr"]) for r in rows if r["method"] == "classical"])
    assert mean == pytest.approx(metrics["methods"]["classical"]["psnr_mean"])
    assert "| mean |" in (d / "out" / "table.md").read_text()
    main(["--task", task, "--pairs", str(d), "--out", str(d / "one"), "--model", str(d / "learned.pt"),
          "--limit", "1", "--methods", "input,classical", "--quiet"])
    assert json.loads((d / "one" / "metrics.json").read_text())["n_images"] == 1


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
