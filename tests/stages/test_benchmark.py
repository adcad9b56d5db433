"""The benchmark command on a tiny folder: the JSON shape, every method, the oracle bound, bad input."""
from __future__ import annotations

import json
from dataclasses import replace
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, project_env
from pipeline.checkpoint import save_model
from pipeline.config import ModelConfig
from pipeline.io import write_image
from pipeline.models.factory import build_model
from pipeline.evaluation import FT_METHODS, ORACLE, ORACLE_CANDIDATES, ORACLE_FT
from stages.benchmark import BENCH_METHODS, main

TUNED = {"global": {"lam": 1e-4, "s_start": 0.19, "s_end": 0.03, "iterations": 5},
         "per_noise": {"1": {"lam": 3e-5, "s_start": 0.19, "s_end": 0.01, "iterations": 5},
                       "3": {"lam": 3e-4, "s_start": 0.19, "s_end": 0.03, "iterations": 5}},
         "classical": {"wiener": {"balance": 0.05}, "richardson_lucy": {"num_iter": 10}, "tv": {"lam": 2e-3}}}


@pytest.fixture
def bench_inputs(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    from pipeline.data import limit_size, load_skimage, to_channels
    for name in ("camera", "coins"):
        write_image(images / f"{name}.png", limit_size(to_channels(load_skimage(name), gray=True), 48))
    k1 = np.outer(np.hanning(7), np.hanning(7))
    k2 = rng.random((5, 5))
    np.save(tmp_path / "kernels.npy", np.stack([k1 / k1.sum(), np.pad(k2 / k2.sum(), 1)]))
    cfg = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)
    model = build_model(cfg, 1)
    save_model(tmp_path / "model.pt", model, cfg, 1, "deblur", model.denoiser.state_dict())
    ablation_cfg = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8, guidance="none")
    save_model(tmp_path / "none.pt", build_model(ablation_cfg, 1), ablation_cfg, 1, "deblur", model.denoiser.state_dict())
    # a control beside the model is found there (as dvc repro lays them out)
    estimated_cfg = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8,
                                guidance="estimated")
    save_model(tmp_path / "estimated_guidance" / "model.pt", build_model(estimated_cfg, 1), estimated_cfg, 1, "deblur",
               model.denoiser.state_dict())
    direct_cfg = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8, guidance="direct")
    save_model(tmp_path / "direct_cnn" / "model.pt", build_model(direct_cfg, 1), direct_cfg, 1, "deblur")
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(TUNED))
    # the protocol's settings come from a params file, as the evaluate stage's do
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"ircnn_iters": 4, "dpir_iters": 2},
                                                          "tune": {"max_iterations": 8}}))
    return tmp_path


def test_benchmark_writes_every_method_and_the_oracle_bounds_the_global_schedule(bench_inputs):
    d = bench_inputs
    main(["--images", str(d / "images"), "--kernels", str(d / "kernels.npy"), "--noise", "1,3", "--out", str(d / "out"),
          "--model", str(d / "model.pt"), "--tuned", str(d / "tuned.yaml"), "--oracle-trials", "3",
          "--params", str(d / "params.yaml"), "--quiet", "--ablation-model", str(d / "none.pt")])
    metrics = json.loads((d / "out" / "metrics.json").read_text())
    assert metrics["noise_levels"] == [1, 3] and metrics["n_images"] == 2 and metrics["n_kernels"] == 2
    assert set(metrics["methods"]) == set(BENCH_METHODS)
    for name, m in metrics["methods"].items():
        assert set(m) == {"psnr", "ssim", "psnr_mean", "ssim_mean", "psnr_std_seeds", "ssim_std_seeds"}, name
        assert set(m["psnr"]) == {"1", "3"} and all(math.isfinite(v) for v in m["psnr"].values()), name
    import csv
    rows = list(csv.DictReader(open(d / "out" / "per_image.csv")))
    by = {(r["image"], r["kernel_id"], r["noise_level"], r["method"]): float(r["psnr"]) for r in rows}
    # per image, each oracle is at least every fixed-form method it could have chosen
    for (img, kid, lvl, method), value in by.items():
        if method == ORACLE:
            assert all(value >= by[(img, kid, lvl, m)] - 1e-9 for m in ORACLE_CANDIDATES)
        if method == ORACLE_FT:
            assert all(value >= by[(img, kid, lvl, m)] - 1e-9 for m in FT_METHODS)
    assert {(c["a"], c["b"]) for c in metrics["comparisons"]} >= {("learned", ORACLE), ("learned", "no_guidance")}
    mismatch = json.loads((d / "out" / "mismatch.json").read_text())
    assert mismatch["told"] == [1, 2, 3, 4, 5] and "learned" in mismatch["psnr"]
    assert len(set(mismatch["psnr"]["learned"].values())) == 1  # blind: told nothing, so flat
    assert (d / "out" / "table.md").read_text().count("|") > 10
    summary = json.loads((d / "out" / "summary.json").read_text())["psnr"]
    assert summary["learned"] == metrics["methods"]["learned"]["psnr_mean"]
    assert summary["gap_db"] >= -1e-9  # the oracle is never below the global schedule


def test_varying_noise_feeds_the_map_to_true_sigma_map_only(bench_inputs):
    d = bench_inputs
    main(["--images", str(d / "images"), "--kernels", str(d / "kernels.npy"), "--noise", "5", "--out", str(d / "var"),
          "--model", str(d / "model.pt"), "--methods", "ircnn_true,true_sigma_map,learned", "--noise-mode", "varying",
          "--params", str(d / "params.yaml"), "--quiet", "--limit", "1", "--no-mismatch"])
    metrics = json.loads((d / "var" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"ircnn_true", "true_sigma_map", "learned"} and metrics["n_images"] == 1
    # with a spatially varying map the map-fed rule is a different restoration from the scalar one
    assert metrics["methods"]["true_sigma_map"]["psnr_mean"] != metrics["methods"]["ircnn_true"]["psnr_mean"]
    assert "varying" in (d / "var" / "table.md").read_text()


def test_the_local_map_control_loads_the_model_it_runs_even_when_that_control_is_not_asked_for(bench_inputs):
    """``estimated_map_guidance`` alone: the estimated_guidance model beside the model is loaded for
    it, and it differs from ``learned_estimated_map`` (another model on the same local map)."""
    d = bench_inputs
    main(["--images", str(d / "images"), "--kernels", str(d / "kernels.npy"), "--noise", "5", "--out", str(d / "loc"),
          "--model", str(d / "model.pt"), "--methods", "learned,estimated_map_guidance,learned_estimated_map",
          "--noise-mode", "varying", "--params", str(d / "params.yaml"), "--quiet", "--limit", "1", "--no-mismatch"])
    methods = json.loads((d / "loc" / "metrics.json").read_text())["methods"]
    assert set(methods) == {"learned", "estimated_map_guidance", "learned_estimated_map"}
    assert methods["estimated_map_guidance"]["psnr_mean"] != methods["learned_estimated_map"]["psnr_mean"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stages.benchmark", "--quiet", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def test_bad_inputs_are_refused_with_a_clear_message(bench_inputs, tmp_path):
    d = bench_inputs
    common = ["--model", str(d / "model.pt"), "--tuned", str(d / "tuned.yaml"), "--out", str(tmp_path / "o"),
              "--params", str(d / "params.yaml")]
    from scipy.io import savemat
    savemat(tmp_path / "nok.mat", {"filters": np.ones((3, 3))})
    res = _cli("--images", str(d / "images"), "--kernels", str(tmp_path / "nok.mat"), *common, cwd=tmp_path)
    assert res.returncode == 2 and "kernels" in res.stderr and "nok.mat" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _cli("--images", str(tmp_path / "empty"), "--kernels", str(d / "kernels.npy"), *common, cwd=tmp_path)
    assert res.returncode == 2 and "no images" in res.stderr
    big = np.ones((61, 61)) / 61**2
    np.save(tmp_path / "big.npy", big)
    res = _cli("--images", str(d / "images"), "--kernels", str(tmp_path / "big.npy"), "--methods", "input,learned",
               *common, cwd=tmp_path)
    assert res.returncode == 2 and "smaller than kernel" in res.stderr
    assert not (tmp_path / "o").exists()


def test_a_crashed_run_resumes_with_its_oracle_scores_and_mismatch_rows(bench_inputs, caplog):
    d = bench_inputs
    caplog.set_level("INFO")
    run = ["--images", str(d / "images"), "--kernels", str(d / "kernels.npy"), "--noise", "3", "--model",
           str(d / "model.pt"), "--tuned", str(d / "tuned.yaml"), "--oracle-trials", "3", "--params",
           str(d / "params.yaml"), "--quiet", "--methods", "ircnn_true,optuna_global,learned,oracle_per_image"]
    main([*run, "--out", str(d / "whole")])
    coins = (d / "images" / "coins.png").read_bytes()
    (d / "images" / "coins.png").write_bytes(b"truncated")  # camera's two samples are scored, then coins fails
    with pytest.raises(Exception, match="coins.png"):
        main([*run, "--out", str(d / "out")])
    journal = [json.loads(line) for line in (d / "out" / "per_image.partial.jsonl").read_text().splitlines()[1:]]
    assert [r["sample_id"] for r in journal] == ["camera-k01-3", "camera-k02-3"]
    assert all(r["mismatch_rows"] and any(row["method"] == "oracle_per_image" for row in r["rows"]) for r in journal)
    (d / "images" / "coins.png").write_bytes(coins)
    main([*run, "--out", str(d / "out")])
    assert [m for m in caplog.messages if "2 images, 2 of 4 samples resumed from its journal" in m]
    for name in ("per_image.csv", "metrics.json", "mismatch.json", "summary.json", "table.md"):
        assert (d / "out" / name).read_bytes() == (d / "whole" / name).read_bytes(), name
    assert not (d / "out" / "per_image.partial.jsonl").exists()


def write_seed_models(d, seeds):
    """The dvc repro layout: models/deblur/seed-<S>/ with a no_guidance control, tuned/deblur/seed-<S>.yaml."""
    import torch
    for seed in seeds:
        folder = d / "models" / "deblur" / f"seed-{seed}"
        cfg = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)
        torch.manual_seed(seed)
        model = build_model(cfg, 1)
        save_model(folder / "model.pt", model, cfg, 1, "deblur", model.denoiser.state_dict())
        save_model(folder / "no_guidance" / "model.pt", build_model(replace(cfg, guidance="none"), 1),
                   replace(cfg, guidance="none"), 1, "deblur", model.denoiser.state_dict())
        (d / "tuned" / "deblur").mkdir(parents=True, exist_ok=True)
        (d / "tuned" / "deblur" / f"seed-{seed}.yaml").write_text(yaml.safe_dump(TUNED))


def test_seeds_read_each_seeds_models_and_compare_over_samples_and_seeds(bench_inputs, monkeypatch):
    d = bench_inputs
    write_seed_models(d, (0, 3))
    monkeypatch.chdir(d)
    main(["--images", "images", "--kernels", "kernels.npy", "--noise", "3", "--out", "seeds", "--seeds", "0,3",
          "--params", "params.yaml", "--quiet", "--no-mismatch", "--methods", "learned,ircnn_estimated,no_guidance"])
    metrics = json.loads((d / "seeds" / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 3] and metrics["methods"]["learned"]["psnr_std_seeds"] > 0
    pairs = {(c["a"], c["b"]): c for c in metrics["comparisons"]}
    assert pairs[("learned", "ircnn_estimated")]["n"] == 2 * 2 * 1 * 2  # 2 images x 2 kernels x 1 level x 2 seeds
    assert set(pairs) == {("learned", "ircnn_estimated"), ("learned", "no_guidance")}


def test_cycle_pairing_blurs_each_image_with_one_kernel_and_keeps_its_samples(bench_inputs):
    """``--pairing cycle``: image i with kernel i mod K only, each sample identical to the same
    sample of the full image x kernel protocol (its noise seed is per image, kernel and level)."""
    d = bench_inputs
    run = ["--images", str(d / "images"), "--kernels", str(d / "kernels.npy"), "--noise", "3", "--model",
           str(d / "model.pt"), "--params", str(d / "params.yaml"), "--quiet", "--no-mismatch",
           "--methods", "input,learned,ircnn_estimated"]
    main([*run, "--out", str(d / "all")])
    main([*run, "--out", str(d / "cycle"), "--pairing", "cycle"])
    import csv
    every = {(r["image"], r["kernel_id"], r["method"]): r for r in csv.DictReader(open(d / "all" / "per_image.csv"))}
    cycle = list(csv.DictReader(open(d / "cycle" / "per_image.csv")))
    assert sorted({(r["image"], r["kernel_id"]) for r in cycle}) == [("camera", "k01"), ("coins", "k02")]
    for r in cycle:
        assert r["psnr"] == every[(r["image"], r["kernel_id"], r["method"])]["psnr"]
    metrics = json.loads((d / "cycle" / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["n_kernels"] == 2
    (c,) = [c for c in metrics["comparisons"] if (c["a"], c["b"]) == ("learned", "ircnn_estimated")]
    assert c["n"] == 2


def test_runs_of_one_seed_each_merge_into_the_several_seeds_run(bench_inputs, monkeypatch):
    """scripts/merge_benchmark_seeds.py: ``--seeds 0`` and ``--seeds 3`` run apart, merged, give the
    files of one ``--seeds 0,3`` run byte for byte; a seed in two runs is refused."""
    d = bench_inputs
    write_seed_models(d, (0, 3))
    monkeypatch.chdir(d)
    common = ["--images", "images", "--kernels", "kernels.npy", "--noise", "1,3", "--params", "params.yaml", "--quiet",
              "--no-mismatch", "--methods", "learned,ircnn_estimated,no_guidance"]
    for seeds, out in (("0,3", "both"), ("0", "s0"), ("3", "s3")):
        main([*common, "--seeds", seeds, "--out", out])
    merge = [sys.executable, str(ROOT / "scripts" / "merge_benchmark_seeds.py"), "--out"]
    res = subprocess.run([*merge, "merged", "s0", "s3"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("metrics.json", "per_image.csv", "table.md"):
        assert (d / "merged" / name).read_bytes() == (d / "both" / name).read_bytes(), name
    res = subprocess.run([*merge, "again", "s0", "both"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "seed 0 is in both" in res.stderr and not (d / "again").exists()
