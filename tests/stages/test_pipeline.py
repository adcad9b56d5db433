"""The real tools end to end: `dvc repro` of the test profile (every task side by side), a no-op
re-run, MLflow runs."""
from __future__ import annotations

import json
import math
import subprocess
import time

import numpy as np
import pytest
import yaml

from conftest import project_env
from pipeline import io
from pipeline.evaluation import ALL_METHODS

STAGES = {"prepare", "degrade", "train", "tune", "evaluate", "report"}


def dvc(root, *args, timeout=600):
    return subprocess.run(["dvc", *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          timeout=timeout)


TRUTH = {"derain": {"y", "target", "streaks", "density"}, "dehaze": {"y", "target", "t", "airlight", "depth"}}
TASKS = ("deblur", "derain", "dehaze")


def check_deblur(root):
    metrics = json.loads((root / "results" / "deblur" / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(ALL_METHODS)
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
        assert set(entry["psnr"]) == {"1", "5"}, name
    assert (root / "models" / "deblur" / "model.pt").exists()
    assert {"global", "per_noise"} <= set(yaml.safe_load((root / "tuned" / "deblur.yaml").read_text()))
    return metrics


def check_task(root, task):
    metrics = json.loads((root / "results" / task / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["noise_levels"] == [] and metrics["n_images"] == 2
    assert set(metrics["methods"]) == {"input", "learned", "no_guidance", "classical"}  # tasks.ablate: both
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
    assert math.isfinite(metrics["guidance_mae"])
    samples = io.read_csv(root / "data" / task / "degraded" / "samples.csv")
    assert {r["split"] for r in samples} == {"val", "test"} and len(samples) == 3  # 2 test + 1 val images, 1 draw each
    arrays = io.load_npz(root / "data" / task / "degraded" / "samples" / f"{samples[0]['sample_id']}.npz")
    assert set(arrays) == TRUTH[task] and arrays["y"].shape[0] == 3 and arrays["target"].shape == (1, *arrays["y"].shape[1:])
    assert yaml.safe_load((root / "tuned" / f"{task}.yaml").read_text()) == {"task": task, "skipped": True}
    from pipeline.checkpoint import load_model
    from pipeline.models.factory import TASK_MODELS
    model = load_model(root / "models" / task / "model.pt", task=task)[0]
    assert isinstance(model, TASK_MODELS[task]) and model.stages == 2  # the profile's tasks.<task> override
    ablation = load_model(root / "models" / task / "no_guidance" / "model.pt", task=task)[0]
    assert isinstance(ablation, TASK_MODELS[task]) and ablation.guidance_mode == "none" and ablation.stages == 2
    assert model.guidance_mode == "learned"
    return metrics


@pytest.mark.slow
def test_dvc_repro_runs_every_task_side_by_side_then_noop_and_mlflow_runs(project_copy):
    # real hazy photos (no ground truth) for the dehaze report: two small colour images
    from skimage import data
    from pipeline.data import limit_size
    for name in ("coffee", "chelsea"):
        img = limit_size(getattr(data, name)().astype(np.float32) / 255, 56)
        io.write_image(project_copy / "real" / f"{name}.png", 0.6 * img + 0.35)  # a flat veil: hazy
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["tasks"]["dehaze"]["evaluate"] = {"real_folder": "real", "real_max_side": 48}
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    t0 = time.perf_counter()
    first = dvc(project_copy, "repro")
    chain_seconds = time.perf_counter() - t0
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"test-profile chain, three tasks: {chain_seconds:.1f} s")
    for stage in STAGES - {"report"}:
        for task in TASKS:
            assert f"Running stage '{stage}@{task}'" in first.stdout, (stage, task)
    assert "Running stage 'ablate@derain'" in first.stdout and "Running stage 'ablate@dehaze'" in first.stdout
    assert "ablate@deblur" not in first.stdout

    metrics = {"deblur": check_deblur(project_copy), **{t: check_task(project_copy, t) for t in ("derain", "dehaze")}}
    report = (project_copy / "reports" / "report.md").read_text()
    assert "## Overview" in report and "Task **derain**" in report and "Task **dehaze**" in report
    assert "Deblurring: Results" in report and "rain density" in report and "transmission correction" in report
    assert f"{metrics['derain']['methods']['learned']['psnr_mean']:.2f}" in report
    assert f"{metrics['dehaze']['methods']['no_guidance']['psnr_mean']:.2f}" in report
    assert (project_copy / "reports" / "figures" / "dehaze_visual_grid.png").exists()
    assert metrics["dehaze"]["n_real"] == 2 and "n_real" not in metrics["derain"]
    assert sorted(p.name for p in (project_copy / "results" / "dehaze" / "real").iterdir()) == ["chelsea.npz", "coffee.npz"]
    assert "Haze removal: Real photos (no ground truth)" in report
    assert (project_copy / "reports" / "figures" / "dehaze_real_photos.png").stat().st_size > 1000
    assert (project_copy / "reports" / "index.html").stat().st_size > 1000
    assert (project_copy / "dvc.lock").exists()

    shown = dvc(project_copy, "metrics", "show", "--json")
    assert shown.returncode == 0 and "learned" in shown.stdout
    for task in TASKS:
        assert f"results/{task}/metrics.json" in shown.stdout

    t0 = time.perf_counter()
    second = dvc(project_copy, "repro")
    noop_seconds = time.perf_counter() - t0
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Running stage" not in second.stdout, second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    print(f"no-op repro: {noop_seconds:.1f} s")

    # a typo in params.yaml: the validate stage refuses it before DVC removes any output
    good = (project_copy / "params.yaml").read_text()
    bad = yaml.safe_load(good)
    bad["train"]["stpes"] = bad["train"].pop("steps")
    (project_copy / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    kept = {p: p.read_bytes() for p in (project_copy / "models" / "deblur").iterdir() if p.is_file()}
    assert {"model.pt", "history.csv", "train.json"} <= {p.name for p in kept}
    typo = dvc(project_copy, "repro")
    assert typo.returncode != 0 and "unknown key 'train.stpes'" in typo.stdout + typo.stderr, typo.stderr[-2000:]
    assert "Running stage 'train@deblur'" not in typo.stdout
    assert all(p.read_bytes() == content for p, content in kept.items())
    (project_copy / "params.yaml").write_text(good)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["hyperguide-deblur"], output_format="list")
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs}
    assert set(by_stage) == STAGES and len(runs) == len(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_stage["train"]
    assert train.data.params["train.strategy"] == "alternating"
    assert "bilevel/loss" in train.data.metrics
    assert by_stage["evaluate"].data.metrics["learned/psnr_mean"] == pytest.approx(
        metrics["deblur"]["methods"]["learned"]["psnr_mean"])
    assert len(train.data.tags["git_commit"]) == 40
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(train.info.run_id)}
    assert "model" in artifacts
    for task in ("derain", "dehaze"):
        runs = mlflow.search_runs(experiment_names=[f"hyperguide-{task}"], output_format="list")
        assert sorted(r.data.tags["dvc_stage"] for r in runs) == sorted([*STAGES, "ablate"])
        assert all(r.info.status == "FINISHED" and r.data.tags["task"] == task for r in runs)
        ablate = next(r for r in runs if r.data.tags["dvc_stage"] == "ablate")
        assert ablate.data.params["model.guidance"] == "none" and ablate.data.tags["guidance"] == "none"

    # the ablation model missing, or one trained with guidance: refused, naming the fix; nothing written
    (project_copy / "models" / "derain" / "no_guidance" / "model.pt").rename(project_copy / "none.pt")
    res = run_evaluate(project_copy, "--task", "derain", "--out", "results/x")
    assert res.returncode == 2 and "dvc repro ablate@derain" in res.stderr, res.stderr[-2000:]
    res = run_evaluate(project_copy, "--task", "derain", "--out", "results/x", "--ablation-model", "models/derain/model.pt")
    assert res.returncode == 2 and "not 'none'" in res.stderr, res.stderr[-2000:]
    assert not (project_copy / "results" / "x").exists()

    # the pipeline registers its model; a by-hand training into a scratch folder does not
    versions = lambda: mlflow.MlflowClient().search_model_versions("name='hyperguide-deblur'")  # noqa: E731
    assert [int(v.version) for v in versions()] == [1]
    scratch = run_stage(project_copy, "train", "--task", "deblur", "--out", "scratch", "--checkpoint", "scratch/train.pt")
    assert scratch.returncode == 0 and (project_copy / "scratch" / "model.pt").exists(), scratch.stderr[-2000:]
    assert [int(v.version) for v in versions()] == [1]


def run_stage(root, stage, *args):
    import sys
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", *args], cwd=root, env=project_env(root),
                          capture_output=True, text=True, timeout=300)


def run_evaluate(root, *args):
    return run_stage(root, "evaluate", *args)
