"""The real tools end to end: `dvc repro` of the test profile (every task side by side), a no-op
re-run, MLflow runs."""
from __future__ import annotations

import json
from collections import Counter
import math
import subprocess
import time

import numpy as np
import pytest
import yaml

from conftest import project_env
from pipeline import io
from pipeline.config import CONTROLS
from pipeline.evaluation import ALL_METHODS

STAGES = {"prepare", "degrade", "train", "tune", "evaluate", "report"}


def dvc(root, *args, timeout=600):
    return subprocess.run(["dvc", *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          timeout=timeout)


TRUTH = {"derain": {"y", "target", "streaks", "density"}, "dehaze": {"y", "target", "t", "airlight", "depth"}}
TASKS = ("deblur", "derain", "dehaze")


def check_deblur(root):
    metrics = json.loads((root / "results" / "deblur" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {*ALL_METHODS, *CONTROLS}
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
        assert set(entry["psnr"]) == {"1", "5"}, name
        assert entry["psnr_std_seeds"] is None, name  # one seed: no spread to report
    check_comparisons(metrics, "ircnn_estimated_ft")
    assert (root / "models" / "deblur" / "seed-0" / "model.pt").exists()
    tuned = yaml.safe_load((root / "tuned" / "deblur" / "seed-0.yaml").read_text())
    assert {"global", "per_noise"} <= set(tuned)
    train = io.read_json(root / "models" / "deblur" / "seed-0" / "train.json")
    assert tuned["budget"]["cpu_seconds"] == pytest.approx(train["cpu_seconds"], abs=0.01)  # the equal budget
    assert "train.json" in tuned["budget"]["source"]
    for entry in (tuned["global"], *tuned["per_noise"].values()):
        assert entry["kept"] in ("tuned", "rule") and entry["trials"] >= 2
    samples = io.read_csv(root / "data" / "deblur" / "degraded" / "samples.csv")
    per_split = {split: sum(r["split"] == split for r in samples) for split in ("val", "test")}
    assert per_split == {"val": 1 * 2 * 2, "test": 2 * 1 * 2}  # val: 2 draws per image (val_per_image), test: 1
    check_controls(root, "deblur")
    return metrics


def check_comparisons(metrics, *others):
    """``comparisons``: learned against every other method (and the pairs that split its gain),
    paired on (sample, seed), each with its interval."""
    assert metrics["seeds"] == [0] and "Student-t" in metrics["ci_method"]
    pairs = {(c["a"], c["b"]): c for c in metrics["comparisons"]}
    for other in ("no_guidance", "estimated_guidance", *others):
        c = pairs[("learned", other)]
        assert set(c) >= {"a", "b", "diff_mean", "ci95", "n", "seeds"} and c["seeds"] == [0]
        lo, hi = c["ci95"]
        assert lo <= c["diff_mean"] <= hi and c["n"] == metrics["n_images"] * max(1, len(metrics["noise_levels"]))
        diff = metrics["methods"]["learned"]["psnr_mean"] - metrics["methods"][other]["psnr_mean"]
        if not metrics["noise_levels"]:  # one level: the mean of the paired differences is the gap of the means
            assert c["diff_mean"] == pytest.approx(diff, abs=1e-9)
    assert ("estimated_guidance", "no_guidance") in pairs


def check_controls(root, task):
    """Each control: the learned model's resolved config but for ``model.guidance`` (and trained
    with the same seed), the guidance its name says."""
    from pipeline.checkpoint import load_model
    from pipeline.models.direct import DirectCNN
    model, _, state = load_model(root / "models" / task / "seed-0" / "model.pt", task=task)
    assert model.guidance_mode == "learned"
    for control, mode in CONTROLS.items():
        other, _, other_state = load_model(root / "models" / task / "seed-0" / control / "model.pt", task=task)
        # direct_cnn is another network (the config it was built from differs in guidance alone)
        assert other.guidance_mode == mode and type(other) is (DirectCNN if mode == "direct" else type(model))
        config, other_config = state["model_config"], other_state["model_config"]
        assert {k for k in config if config[k] != other_config[k]} == {"guidance"}
        train, other_train = (io.read_json(root / "models" / task / "seed-0" / sub / "train.json") for sub in ("", control))
        assert train["seed"] == other_train["seed"] == 0 and other_train["guidance"] == mode
        assert train["cpu_seconds"] > 0


def check_task(root, task):
    metrics = json.loads((root / "results" / task / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["noise_levels"] == [] and metrics["n_images"] == 2
    assert metrics["data"] == "synthetic"  # (real pairs: tests/stages/test_pairs_training.py)
    assert set(metrics["methods"]) == {"input", "learned", *CONTROLS, "classical", *(["dgsm"] if task == "derain" else [])}
    check_comparisons(metrics, "classical", "input")
    check_controls(root, task)
    for name, entry in metrics["methods"].items():
        assert math.isfinite(entry["psnr_mean"]) and 0 < entry["ssim_mean"] <= 1, name
    assert math.isfinite(metrics["guidance_mae"])
    samples = io.read_csv(root / "data" / task / "degraded" / "samples.csv")
    assert {r["split"] for r in samples} == {"val", "test"} and len(samples) == 3  # 2 test + 1 val images, 1 draw each
    arrays = io.load_npz(root / "data" / task / "degraded" / "samples" / f"{samples[0]['sample_id']}.npz")
    assert set(arrays) == TRUTH[task] and arrays["y"].shape[0] == 3 and arrays["target"].shape == (1, *arrays["y"].shape[1:])
    assert yaml.safe_load((root / "tuned" / task / "seed-0.yaml").read_text()) == {"task": task, "skipped": True}
    from pipeline.checkpoint import load_model
    from pipeline.models.factory import TASK_MODELS
    model = load_model(root / "models" / task / "seed-0" / "model.pt", task=task)[0]
    assert isinstance(model, TASK_MODELS[task]) and model.stages == 2  # the profile's tasks.<task> override
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
    for task in TASKS:
        for stage in ("prepare", "degrade", "evaluate"):
            assert f"Running stage '{stage}@{task}'" in first.stdout, (stage, task)
        for stage in ("train", "tune"):  # one per training seed of base.seeds
            assert f"Running stage '{stage}@{task}-0'" in first.stdout, (stage, task)
        for control in CONTROLS:
            assert f"Running stage 'ablate@{task}-0-{control}'" in first.stdout, (task, control)

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
    for task in TASKS:  # the headlines only: the full tables are plain outputs
        assert f"results/{task}/headline.json" in shown.stdout and f"results/{task}/metrics.json" not in shown.stdout
    headline = json.loads((project_copy / "results" / "deblur" / "headline.json").read_text())["deblur"]
    assert headline["learned"] == pytest.approx(metrics["deblur"]["methods"]["learned"]["psnr_mean"], abs=1e-3)
    assert headline["vs"] in metrics["deblur"]["methods"] and headline["vs"] not in ("learned", "input", "true_sigma_map")
    one_task = dvc(project_copy, "metrics", "show", "results/deblur/headline.json").stdout.splitlines()
    assert one_task[0].split() == ["Path", *(f"deblur.{k}" for k in sorted(headline))], one_task  # 6 columns

    t0 = time.perf_counter()
    second = dvc(project_copy, "repro")
    noop_seconds = time.perf_counter() - t0
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Running stage" not in second.stdout, second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    print(f"no-op repro: {noop_seconds:.1f} s")

    # an experiment (`dvc exp run -S`, committed below so DVC has a baseline): only what the
    # param reaches re-runs; `dvc exp show --only-changed` lists it within a 120-column terminal
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "repro"]):
        subprocess.run(cmd, cwd=project_copy, check=True, capture_output=True)
    exp = dvc(project_copy, "exp", "run", "-n", "visuals2", "-S", "+tasks.deblur.evaluate.n_visuals=2")
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    assert "Running stage 'evaluate@deblur'" in exp.stdout and "Running stage 'train@deblur-0'" not in exp.stdout
    assert "Running stage 'evaluate@derain'" not in exp.stdout
    assert len(list((project_copy / "results" / "deblur" / "visuals").iterdir())) == 2
    table = json.loads(dvc(project_copy, "exp", "show", "--json").stdout)
    ran = {e["revs"][0]["name"]: e["revs"][0]["data"] for rev in table for e in rev.get("experiments") or []}
    assert ran["visuals2"]["params"]["params.yaml"]["data"]["tasks"]["deblur"]["evaluate"] == {"n_visuals": 2}
    assert ran["visuals2"]["metrics"]["results/deblur/headline.json"]["data"]["deblur"]["learned"] == headline["learned"]
    narrow = subprocess.run(["dvc", "exp", "show", "--no-pager", "--only-changed"], cwd=project_copy, capture_output=True,
                            text=True, env={**project_env(project_copy), "COLUMNS": "120"}, timeout=300)
    assert "visuals2" in narrow.stdout and max(map(len, narrow.stdout.splitlines())) <= 120, narrow.stdout

    # a typo in params.yaml: the validate stage refuses it before DVC removes any output
    good = (project_copy / "params.yaml").read_text()
    bad = yaml.safe_load(good)
    bad["train"]["stpes"] = bad["train"].pop("steps")
    (project_copy / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    kept = {p: p.read_bytes() for p in (project_copy / "models" / "deblur" / "seed-0").iterdir() if p.is_file()}
    assert {"model.pt", "history.csv", "train.json"} <= {p.name for p in kept}
    typo = dvc(project_copy, "repro")
    assert typo.returncode != 0 and "unknown key 'train.stpes'" in typo.stdout + typo.stderr, typo.stderr[-2000:]
    assert "Running stage 'train@deblur-0'" not in typo.stdout
    assert all(p.read_bytes() == content for p, content in kept.items())
    (project_copy / "params.yaml").write_text(good)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["hyperguide-deblur"], output_format="list")
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs}
    # one run per stage and control, and the experiment's evaluate@deblur and report runs
    expected = Counter({**dict.fromkeys(STAGES, 1), "ablate": len(CONTROLS), "evaluate": 2, "report": 2})
    assert Counter(r.data.tags["dvc_stage"] for r in runs) == expected
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
        # the experiment re-ran the report (it reads every task) and nothing else of this task
        assert sorted(r.data.tags["dvc_stage"] for r in runs) == sorted([*STAGES, *["ablate"] * len(CONTROLS), "report"])
        assert all(r.info.status == "FINISHED" and r.data.tags["task"] == task for r in runs)
        ablate = {r.data.tags["control"]: r for r in runs if r.data.tags["dvc_stage"] == "ablate"}
        assert {c: r.data.params["model.guidance"] for c, r in ablate.items()} == CONTROLS

    # a control model missing, or one trained with another guidance: refused, naming the fix; nothing written
    control = project_copy / "models" / "derain" / "seed-0" / "no_guidance" / "model.pt"
    control.rename(project_copy / "none.pt")
    res = run_evaluate(project_copy, "--task", "derain", "--out", "results/x")
    assert res.returncode == 2 and "dvc repro ablate@derain-0-no_guidance" in res.stderr, res.stderr[-2000:]
    control.write_bytes((project_copy / "models" / "derain" / "seed-0" / "model.pt").read_bytes())
    res = run_evaluate(project_copy, "--task", "derain", "--out", "results/x")
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
