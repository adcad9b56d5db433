"""Tests for the report (pipeline.report, stages.report's loading/writing) on small fake outputs."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import io
from pipeline.report import figures as figs
from pipeline.report import best_rival, headline, ordered_methods
from pipeline.report.page import (
    compose,
    fig_to_png,
    order_visuals,
    psnr_gap,
    render_html,
    render_markdown,
    results_table,
    stage_table,
)
from stages.report import load_inputs, write_report

LEVELS = (1, 3)
# method -> (psnr per level, ssim per level); true_sigma_map is the best but is a bound.
SCORES = {
    "learned": ((30.0, 27.5), (0.85, 0.78)),
    "input": ((22.0, 21.0), (0.60, 0.50)),
    "ircnn_estimated": ((29.0, 27.5), (0.86, 0.70)),
    "true_sigma_map": ((31.0, 29.0), (0.90, 0.80)),
}
H, W = 37, 29  # odd, non-square
K = 3  # unfolded stages


def fake_metrics() -> dict:
    methods = {}
    for m, (p, s) in SCORES.items():
        methods[m] = {"psnr": {f"{l:g}": v for l, v in zip(LEVELS, p)}, "ssim": {f"{l:g}": v for l, v in zip(LEVELS, s)},
                      "psnr_mean": float(np.mean(p)), "ssim_mean": float(np.mean(s))}
    return {"noise_levels": list(LEVELS), "methods": methods, "n_images": 2, "n_kernels": 2,
            "guidance_mae_255": 1.3, "estimated_sigma_mae_255": 0.4}


def write_fake_outputs(root: Path, phases=("pretrain", "bilevel"), n_visuals: int = 2) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    results, models = root / "results", root / "models"
    io.write_json(results / "metrics.json", fake_metrics())
    per_image, stages, guidance = [], [], []
    for level in LEVELS:
        for img in ("camera", "coins"):
            sid = f"test-{img}-k0-n{float(level)}"
            for m in SCORES:
                per_image.append({"sample_id": sid, "image": img, "kernel_id": "k0", "noise_level": float(level),
                                  "method": m, "psnr": 25 + rng.normal(), "ssim": 0.7})
            for k in range(1, K + 1):
                stages.append({"sample_id": sid, "noise_level": float(level), "stage": k, "rho": 0.01 * 4**k,
                               "guidance_mean_255": level * 2.55 / k, "guidance_std_255": 0.3})
            guidance.append({"noise_level": float(level), "mae_255": 1.2, "estimated_sigma_255": level * 2.55 + 0.5})
    io.write_csv(results / "per_image.csv", per_image)
    io.write_csv(results / "stages.csv", stages)
    io.write_csv(results / "guidance.csv", guidance)
    for level in LEVELS[:n_visuals]:
        gt = rng.random((1, H, W)).astype(np.float32)
        arrays = {"ground_truth": gt, "kernel": np.full((5, 5), 1 / 25, np.float32),
                  "sigma_true": np.full((H, W), level / 100, np.float32),
                  "noise_estimate": np.full((H, W), level / 100 + 0.002, np.float32),
                  **{f"method__{m}": np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
                     for m in SCORES},
                  **{f"guidance__{k}": rng.random((H, W)).astype(np.float32) * 0.03 for k in range(1, K + 1)}}
        io.save_npz(results / "visuals" / f"test-camera-k0-n{float(level)}.npz", **arrays)
    (results / "visuals").mkdir(parents=True, exist_ok=True)
    history = []
    for phase in phases:
        for step in (10, 20, 30):
            row = {"phase": phase, "step": step, "loss": 1.0 / step, "seconds_per_step": 0.1}
            if phase == "bilevel":
                row["guidance_loss"] = 0.5 / step
            if step == 30:
                row["val_psnr"] = 26.0 if phase == "pretrain" else 27.0
            history.append(row)
    io.write_csv(models / "history.csv", history)
    io.write_json(models / "train.json", {"seconds": 12.5, "resumed_from_step": None, "n_parameters": 1234,
                                          "device": "cpu", "pretrain_val_psnr": 26.0, "bilevel_val_psnr": 27.0,
                                          "rhos": [0.04, 0.16, 0.64]})
    return results, models


@pytest.fixture(scope="module", autouse=True)
def low_dpi():
    """Small figures keep the rendering (most of this module's time) fast; layout is unaffected."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figs, "DPI", 40)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory, low_dpi):
    root = tmp_path_factory.mktemp("report")
    results, models = write_fake_outputs(root)
    inputs = load_inputs(results, models)
    report = compose(inputs, "Test report <&>", ("ircnn_estimated", "learned", "not_a_method"))
    out = root / "reports"
    write_report(report, out)
    return inputs, report, out


def _bolded(cell: str) -> list[str]:
    return re.findall(r"\*\*(.+?)\*\*", cell)


def test_results_table_methods_as_columns_levels_as_rows():
    table = results_table(fake_metrics())
    assert list(table.columns) == ["input", "ircnn_estimated", "true_sigma_map", "learned"]
    assert list(table.index) == ["1", "3", "mean"]
    plain = results_table(fake_metrics(), bold=False)
    assert plain.at["1", "learned"] == "30.00 / 0.850"
    assert plain.at["3", "input"] == "21.00 / 0.500"
    assert plain.at["mean", "learned"] == "28.75 / 0.815"


def test_results_table_bolds_best_per_row_excluding_bounds():
    table = results_table(fake_metrics())
    # level 1: learned has the best PSNR, ircnn_estimated the best SSIM; the bound is higher on both.
    assert _bolded(table.at["1", "learned"]) == ["30.00"]
    assert _bolded(table.at["1", "ircnn_estimated"]) == ["0.860"]
    assert _bolded(table.at["1", "true_sigma_map"]) == []
    # level 3: a PSNR tie bolds both.
    assert _bolded(table.at["3", "learned"]) == ["27.50", "0.780"]
    assert _bolded(table.at["3", "ircnn_estimated"]) == ["27.50"]
    assert _bolded(table.at["mean", "learned"]) == ["28.75", "0.815"]
    assert not any(_bolded(c) for c in table["input"])


def test_results_table_missing_value_and_extra_method():
    metrics = fake_metrics()
    del metrics["methods"]["learned"]["psnr"]["3"]
    metrics["methods"]["zz_new"] = {"psnr": {"1": 1.0}, "ssim": {"1": 0.1}}
    table = results_table(metrics, bold=False)
    assert table.columns[-1] == "zz_new"
    assert table.at["3", "learned"].startswith("– /")
    assert table.at["3", "zz_new"] == "– / –"
    assert table.at["mean", "zz_new"] == "1.00 / 0.100"


def test_ordered_methods_and_gap():
    assert ordered_methods(["learned", "foo", "input", "dpir_true"]) == ["input", "dpir_true", "learned", "foo"]
    assert psnr_gap(fake_metrics()) == pytest.approx(28.75 - 28.25)
    assert psnr_gap({"methods": {"learned": {"psnr_mean": 1.0}}}) is None


def test_html_is_self_contained(built):
    _, _, out = built
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') >= 5
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "Test report &lt;&amp;&gt;" in page
    assert "<strong>30.00</strong>" in page
    assert "true_sigma_map†" in page
    assert "+0.50 dB" in page  # learned - ircnn_estimated mean PSNR


def test_markdown_references_existing_figures(built):
    _, report, out = built
    md = (out / "report.md").read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(r).name for r in refs} == {f"{f.name}.png" for f in report.figures()}
    for ref in refs:
        path = out / ref
        assert path.is_file() and path.read_bytes().startswith(b"\x89PNG")
    assert "| noise level (%) | input | ircnn_estimated | true_sigma_map† | learned |" in md
    assert "**30.00** / 0.850" in md


def test_visual_grid_rows(built):
    inputs, _, _ = built
    assert [v["sample_id"] for v in inputs.visuals] == ["test-camera-k0-n1.0", "test-camera-k0-n3.0"]
    assert inputs.visuals[0]["ground_truth"].shape == (1, H, W)
    methods = ["ircnn_estimated", "learned"]
    n_cols = 1 + len(methods) + 1 + 2  # input, methods, ground truth, predicted + true noise maps
    for zoom, per_sample in ((False, 1), (True, 2)):
        fig = figs.visual_grid(inputs.visuals[: 1 if zoom else 2], methods, zoom=zoom)
        rows = {ax.get_subplotspec().rowspan.start for ax in fig.axes}
        assert len(rows) == (1 if zoom else 2) * per_sample
        assert len(fig.axes) == len(rows) * n_cols
        titles = [ax.get_title() for ax in fig.axes]
        assert any(t.startswith("learned\n") and t.endswith(" dB") for t in titles)
    with pytest.raises(ValueError):
        figs.visual_grid([], methods)


def test_stage_table(built):
    inputs, _, _ = built
    table = stage_table(inputs.stages)
    assert list(table.index) == [1, 2, 3]
    assert list(table.columns) == ["ρ_k", "guidance @ 1% (/255)", "guidance @ 3% (/255)"]
    assert table.at[2, "ρ_k"] == "0.16"
    assert table.at[1, "guidance @ 3% (/255)"] == "7.65 ± 0.30"


def test_missing_metrics_names_the_file(tmp_path):
    with pytest.raises(io.InputError, match=re.escape(str(tmp_path / "results" / "metrics.json"))):
        load_inputs(tmp_path / "results", tmp_path / "models")


def test_no_visuals_one_phase_missing_csvs(tmp_path):
    results, models = write_fake_outputs(tmp_path, phases=("pretrain",), n_visuals=0)
    (results / "stages.csv").unlink()
    inputs = load_inputs(results, models)
    assert inputs.visuals == [] and inputs.missing == [str(results / "stages.csv")]
    report = compose(inputs, "t", ("learned",))
    names = {f.name for f in report.figures()}
    assert "visual_grid" not in names and "training_curves" in names
    md = render_markdown(report)
    assert "No visual samples" in md and "stages.csv" in md
    assert 'src="data:image/png;base64,' in render_html(report)
    # Empty frames still give figures, not errors.
    for fig in (figs.training_curves(pd.DataFrame()), figs.stage_stats(pd.DataFrame()),
                figs.gain_hist(pd.DataFrame()), figs.psnr_vs_noise({"methods": {}})):
        assert fig_to_png(fig).startswith(b"\x89PNG")


def test_stage_table_rho_per_level_when_it_differs():
    stages = pd.DataFrame({"sample_id": ["a", "a", "b", "b"], "noise_level": ["1.0", "1.0", "3.0", "3.0"],
                           "stage": ["1", "2", "1", "2"], "rho": ["0.1", "0.2", "0.3", "0.4"],
                           "guidance_mean_255": ["1", "2", "3", "4"], "guidance_std_255": ["", "", "", ""]})
    table = stage_table(stages)
    assert list(table.columns[:2]) == ["ρ_k @ 1%", "ρ_k @ 3%"]
    assert table.at[2, "ρ_k @ 3%"] == "0.4"
    assert table.at[1, "guidance @ 1% (/255)"] == "1.00"  # empty std cells: no "±"


def test_visuals_take_their_level_from_the_per_image_table_and_sort_by_it():
    visuals = [{"sample_id": "b"}, {"sample_id": "a-n3.0"}, {"sample_id": "c"}]
    per_image = pd.DataFrame({"sample_id": ["b", "b", "c"], "noise_level": ["5", "5", "1"]})
    ordered = order_visuals(visuals, per_image)
    assert [v["sample_id"] for v in ordered] == ["c", "a-n3.0", "b"]  # 1, 3 (from the id), 5
    assert ordered[0]["noise_level"] == 1.0 and "noise_level" not in ordered[1]


def with_comparisons(lo_hi_overall, lo_hi_level1, seeds=(0,)):
    m = fake_metrics()
    m["seeds"], m["ci_method"] = list(seeds), "paired Student-t interval over (sample, seed) pairs"
    m["comparisons"] = [{"a": "learned", "b": "ircnn_estimated", "metric": "psnr", "diff_mean": 0.5,
                         "ci95": list(lo_hi_overall), "n": 8, "seeds": list(seeds),
                         "per_level": {"1": {"diff_mean": 1.0, "ci95": list(lo_hi_level1), "n": 4},
                                       "3": {"diff_mean": 0.0, "ci95": [-0.4, 0.4], "n": 4}}}]
    for name, entry in m["methods"].items():
        entry["psnr_std_seeds"] = 0.12 if len(seeds) > 1 else None
    return m


def test_a_winner_is_bold_only_where_its_interval_excludes_zero():
    table = results_table(with_comparisons((0.1, 0.9), (0.5, 1.5)))
    assert table.at["1", "learned"].startswith("**30.00**")  # learned best at 1 %, interval above 0
    assert "**" not in table.at["3", "learned"] + table.at["3", "ircnn_estimated"]  # a tie: no verdict
    assert "**" not in "".join(table["ircnn_estimated"])  # SSIM is never tested, so never bold
    unsure = results_table(with_comparisons((-0.1, 0.9), (-0.5, 1.5)))
    assert "**" not in "".join(unsure.to_numpy().ravel())


def test_the_comparison_table_and_the_seed_count_are_said_plainly():
    from pipeline.report.page import comparison_blocks, comparison_table
    table = comparison_table(with_comparisons((0.1, 0.9), (0.5, 1.5)))
    row = table.loc["`learned` − `ircnn_estimated`"]
    assert row["diff (dB)"] == "+0.50" and row["95 % interval"] == "[+0.10, +0.90]" and "learned better" in row["verdict"]
    assert "1 %: +1.00 [+0.50, +1.50]" in row["per noise level"]
    assert "no significant" in comparison_table(with_comparisons((-0.1, 0.9), (0.5, 1.5))).iloc[0]["verdict"]
    assert "**1 seed**" in comparison_blocks(with_comparisons((0.1, 0.9), (0.5, 1.5)))[0]
    three = with_comparisons((0.1, 0.9), (0.5, 1.5), seeds=(0, 1, 2))
    assert "**3 seeds**" in comparison_blocks(three)[0] and "± 0.12" in results_table(three).at["mean", "learned"]
    # with several seeds, the interval over the seeds' means beside it (the verdict keeps the first)
    assert "95 % interval over seeds" not in table.columns
    three["comparisons"][0]["ci95_seeds"] = [-0.3, 1.3]
    row3 = comparison_table(three).iloc[0]
    assert row3["95 % interval over seeds"] == "[-0.30, +1.30]" and "learned better" in row3["verdict"]
    assert "over the seeds' mean differences" in comparison_blocks(three)[0]
    assert "No paired comparisons" in comparison_blocks(fake_metrics())[1]


TUNED = {
    "budget": {"cpu_seconds": 464.0, "source": "cpu_seconds of models/deblur/seed-0/train.json", "spent_cpu_seconds": 470.4},
    "global": {"val_psnr": 24.27, "kept": "tuned", "rule_val_psnr": 24.11, "trials": 22, "cpu_seconds": 154.9},
    "per_noise": {"1": {"val_psnr": 27.26, "kept": "rule", "source": "dpir", "rule_val_psnr": 27.26, "trials": 9,
                        "cpu_seconds": 59.9}},
    "classical": {"tv": {"val_psnr": 25.10, "trials": 16, "cpu_seconds": 26.0}},
}


def test_the_report_prints_the_tuning_budget_and_which_schedules_fell_back_to_their_rule(tmp_path):
    from pipeline.report.page import tuning_summary
    (text,) = tuning_summary({0: TUNED, 1: {"task": "derain", "skipped": True}})
    assert "seed 0" in text and "**470 CPU-s spent**" in text and "budget of **464 CPU-s**" in text
    assert "`optuna_global`: tuned, 24.27 dB on validation vs the rule's 24.11 (22 trials, 155 CPU-s)" in text
    assert "`optuna_per_noise` at 1 %: **the DPIR rule**" in text and "`tv`: 25.10 dB" in text
    results, models = write_fake_outputs(tmp_path)
    io.write_text(tmp_path / "seed-0.yaml", yaml.safe_dump(TUNED))
    inputs = load_inputs(results, models, {0: tmp_path / "seed-0.yaml", 1: tmp_path / "seed-1.yaml"})
    assert inputs.tuning == {0: TUNED} and str(tmp_path / "seed-1.yaml") in inputs.missing
    page = render_markdown(compose(inputs, "t", ["learned"]))
    assert "budget of **464 CPU-s**" in page


def test_the_headline_names_the_best_non_bound_rival_with_the_paired_interval():
    m = with_comparisons((0.1, 0.9), (0.5, 1.5))
    # true_sigma_map (30.0 mean) is a bound; input is a reference: the rival is ircnn_estimated (28.25)
    assert best_rival(m) == "ircnn_estimated"
    assert headline(m, "deblur") == {"deblur": {"learned": 28.75, "margin": 0.5, "ci_lo": 0.1, "ci_hi": 0.9,
                                                "vs": "ircnn_estimated", "guidance_err": 1.3}}
    # a control that beats learned becomes the rival; with no comparison of that pair, no margin
    m["methods"]["no_guidance"] = {"psnr_mean": 29.5, "ssim_mean": 0.8}
    m["methods"]["learned"]["psnr_mean"] = float("nan")
    rain = headline({**m, "guidance_mae_255": None, "guidance_mae": 0.02}, "derain")["derain"]
    assert rain == {"learned": None, "margin": None, "ci_lo": None, "ci_hi": None, "vs": "no_guidance",
                    "guidance_err": 0.02}


def test_colour_tasks_show_their_luma_scores_in_a_row_of_their_own():
    from pipeline.report.page import LUMA_ROW
    m = {"noise_levels": [], "methods": {
        "learned": {"psnr": {}, "ssim": {}, "psnr_mean": 20.0, "ssim_mean": 0.7, "psnr_y_mean": 21.5, "ssim_y_mean": 0.75},
        "input": {"psnr": {}, "ssim": {}, "psnr_mean": 18.0, "ssim_mean": 0.6, "psnr_y_mean": 19.0, "ssim_y_mean": 0.65}}}
    table = results_table(m)
    assert list(table.index) == ["mean", LUMA_ROW]
    assert table.at[LUMA_ROW, "learned"] == "21.50 / 0.750" and "**" not in table.at[LUMA_ROW, "learned"]
    assert LUMA_ROW not in results_table(fake_metrics()).index  # grey deblurring: none
