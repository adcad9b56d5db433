"""Rain and haze through the real pipeline (the `dvc repro` of every task is in test_pipeline.py):
a one-task pipeline, a user depth map of the wrong size refused at the degrade stage."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import yaml

from conftest import ROOT, copy_project, profile_dict, project_env
from pipeline import io
from pipeline.config import CONTROLS

TRUTH = {"derain": {"y", "target", "streaks", "density"}, "dehaze": {"y", "target", "t", "airlight", "depth"}}


def task_params(task: str, **degrade) -> dict:
    params = profile_dict()
    params["base"]["task"] = task
    params["degrade"].setdefault({"derain": "rain", "dehaze": "haze"}[task], {}).update(degrade)
    return params


def test_one_task_runs_alone_from_tasks_run(tmp_path):
    """`tasks.run: [derain]` makes a one-task pipeline: DVC resolves only that task's stages."""
    params = profile_dict()
    params["tasks"]["run"], params["base"]["seeds"] = ["derain"], [0, 2]
    root = copy_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run(["dvc", "stage", "list"], cwd=root, env=project_env(root), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    names = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    per_seed = {f"{stage}@derain-{seed}" for stage in ("train", "tune") for seed in (0, 2)}
    controls = {f"ablate@derain-{seed}-{c}" for seed in (0, 2) for c in CONTROLS}
    assert names == {"validate", "prepare@derain", "degrade@derain", *per_seed, *controls, "evaluate@derain", "report"}


def run_stage(cwd, stage, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--quiet", *args], cwd=cwd,
                          env=project_env(ROOT), capture_output=True, text=True, timeout=300)


def test_depth_maps_are_used_and_a_wrong_size_is_refused(tmp_path):
    depth = tmp_path / "depth"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(task_params("dehaze", per_image=1, depth_folder=str(depth))))
    assert run_stage(tmp_path, "prepare", "--out", "prepared").returncode == 0
    rows = [r for r in io.read_csv(tmp_path / "prepared" / "manifest.csv") if r["split"] != "train"]
    for r in rows:  # at the prepared size: a ramp, far at the top
        ramp = np.linspace(1.0, 0.0, int(r["height"]))[:, None] * np.ones((1, int(r["width"])))
        io.write_image(depth / f"{r['name']}.png", ramp, bits=16)
    assert run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded").returncode == 0
    samples = io.read_csv(tmp_path / "degraded" / "samples.csv")
    assert {s["haze_depth"] for s in samples} == {"given"}
    t = io.load_npz(tmp_path / "degraded" / "samples" / f"{samples[0]['sample_id']}.npz")["t"][0]
    assert (np.diff(t.mean(axis=1)) >= -1e-6).all()  # transmission rises towards the (near) bottom

    bad = rows[-1]["name"]
    io.write_image(depth / f"{bad}.png", np.ones((20, 30)) * 0.5)
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded2")
    assert res.returncode == 2 and f"{bad}.png" in res.stderr and "20x30" in res.stderr
    assert not (tmp_path / "degraded2").exists()
    (depth / f"{bad}.png").unlink()
    res = run_stage(tmp_path, "degrade", "--prepared", "prepared", "--out", "degraded2")
    assert res.returncode == 2 and "no depth map" in res.stderr and bad in res.stderr


def test_sweeps_refuse_rain_and_haze_clearly(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(task_params("derain")))
    res = run_stage(tmp_path, "sweep", "--sweep", str(ROOT / "sweeps" / "tiny.yaml"), "--no-tracking")
    assert res.returncode == 2 and "base.task derain" in res.stderr and "deblur only" in res.stderr


def test_each_seed_and_control_has_its_own_paths_beside_the_task_model():
    from stages.common import TaskPaths
    paths, none = TaskPaths("derain", 2), TaskPaths("derain", 2).variant("none")
    assert (str(paths.model), str(paths.checkpoint)) == ("models/derain/seed-2/model.pt",
                                                         "checkpoints/derain/seed-2/train.pt")
    # the ablate stage's outputs in dvc.yaml; never the learned model's files
    assert (str(none.model), str(none.checkpoint)) == ("models/derain/seed-2/no_guidance/model.pt",
                                                       "checkpoints/derain/seed-2-no_guidance/train.pt")
    assert str(paths.variant("estimated").models) == "models/derain/seed-2/estimated_guidance"
    assert paths.variant("learned") == paths and str(paths.tuned) == "tuned/derain/seed-2.yaml"
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    assert "--out models/${item.task}/seed-${item.seed}/${item.control}" in dvc_yaml
    assert "checkpoints/${item.task}/seed-${item.seed}-${item.control}/train.pt" in dvc_yaml


def test_split_scores_score_the_test_split_as_evaluate_does(tmp_path):
    """scripts/split_scores.py on a trained haze project: its test-split scores are the evaluate
    stage's, its validation scores differ from them, and a pre-training-end model (train.steps 0)
    is scored beside the seed's models."""
    params = task_params("dehaze")
    params["tasks"]["controls"] = ["no_guidance"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    data, models = "data/dehaze", "models/dehaze/seed-0"
    steps = [("prepare", "--out", f"{data}/prepared"),
             ("degrade", "--prepared", f"{data}/prepared", "--out", f"{data}/degraded"),
             ("train", "--prepared", f"{data}/prepared", "--degraded", f"{data}/degraded", "--out", models,
              "--checkpoint", "ck/learned.pt"),
             ("train", "--control", "no_guidance", "--prepared", f"{data}/prepared", "--degraded",
              f"{data}/degraded", "--out", f"{models}/no_guidance", "--checkpoint", "ck/none.pt"),
             ("evaluate", "--prepared", f"{data}/prepared", "--degraded", f"{data}/degraded", "--models",
              "models/dehaze", "--tuned", "tuned/dehaze", "--out", "results")]
    for stage, *args in steps:
        done = run_stage(tmp_path, stage, "--params", "params.yaml", "--task", "dehaze", *args)
        assert done.returncode == 0, done.stderr[-2000:]
    params["tasks"]["dehaze"]["train"]["steps"] = 0
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(params))
    done = run_stage(tmp_path, "train", "--params", "pre.yaml", "--task", "dehaze", "--prepared", f"{data}/prepared",
                     "--degraded", f"{data}/degraded", "--out", "pre", "--checkpoint", "ck/pre.pt")
    assert done.returncode == 0, done.stderr[-2000:]

    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_scores.py"), "--project", str(tmp_path),
                          "--task", "dehaze", "--extra", f"pretrain_end={tmp_path / 'pre'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    got = dict(line.split("=") for line in lines)
    assert lines[-1].startswith("sign_agreement=") and float(got["sign_agreement"]) in (0.0, 1.0)
    metrics = io.read_json(tmp_path / "results" / "metrics.json")["methods"]
    for method in ("input", "classical", "learned", "no_guidance"):
        assert abs(float(got[f"test_{method}_seed0"]) - metrics[method]["psnr_mean"]) < 5e-4
    assert float(got["val_input_seed0"]) != float(got["test_input_seed0"])  # another split, other images
    assert float(got["test_pretrain_end"]) != float(got["test_learned_seed0"])  # the bilevel phase moved it
    gap = float(got["test_learned_seed0"]) - float(got["test_no_guidance_seed0"])
    assert abs(float(got["test_learned_minus_no_guidance_seed0"]) - gap) < 2e-3

    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_scores.py"), "--project", str(tmp_path),
                          "--task", "dehaze", "--seeds", "3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "seed-3/model.pt: missing" in bad.stderr
    (tmp_path / "params.yaml").write_text("model: {stagez: 3}\n")  # a typo: refused, naming the file
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_scores.py"), "--project", str(tmp_path),
                          "--task", "dehaze"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "params.yaml" in bad.stderr and "stagez" in bad.stderr
