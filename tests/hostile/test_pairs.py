"""Hostile pairs: a degraded image without its clean partner (or the other way round), a rain
model given haze pairs, and an identical pair (an infinite PSNR, capped, not a crash).

Other bad-pair cases, inside tests that need their own setup:
- tests/stages/test_benchmark_pairs.py::test_a_crashed_run_resumes_from_its_journal_and_ends_as_an_uninterrupted_one
  (an unreadable pair mid-run)
- tests/stages/test_benchmark_pairs.py::test_a_journal_of_other_settings_or_other_data_is_not_reused
  (a pair changed since it was journaled)
- tests/test_evaluation.py::test_rain_pairs_without_a_target_score_learned_and_refuse_oracle_guidance
- tests/test_metrics.py::test_mismatched_shapes_and_overlarge_crops_are_refused
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from pair_folders import make_pairs
from pipeline import io
from pipeline.io import InputError, list_pairs, write_image
from pipeline.metrics import PSNR_CAP_DB
from stages.benchmark import main


def test_list_pairs_matches_rain100h_style_names_and_refuses_mismatches(tmp_path):
    img = np.zeros((4, 4))
    for i in (1, 2):
        write_image(tmp_path / "rain" / f"rain-{i:03d}.png", img)
        write_image(tmp_path / "norain" / f"norain-{i:03d}.png", img)
    pairs = list_pairs(tmp_path, "rain", "norain")
    assert [(a.name, b.name) for a, b in pairs] == [("rain-001.png", "norain-001.png"), ("rain-002.png", "norain-002.png")]
    write_image(tmp_path / "norain" / "norain-003.png", img)
    write_image(tmp_path / "rain" / "rain-004.png", img)
    with pytest.raises(InputError, match=r"no norain partner for rain-004.png; no rain partner for norain-003.png"):
        list_pairs(tmp_path, "rain", "norain")


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
