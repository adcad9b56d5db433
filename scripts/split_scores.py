"""Does the validation split rank a rain or haze model as the test split does?

    python scripts/split_scores.py [--project .] [--task dehaze] [--seeds 0] [--splits val,test]
        [--extra NAME=FOLDER ...]

Design choices are made on the validation split (docs/method.md §6), so validation must move with
test. This scores every training seed's ``learned`` model and its controls (``no_guidance``,
``estimated_guidance``, found beside it in ``models/<task>/seed-<S>/``), the classical start and
the input on each split, with the ``evaluate`` stage's protocol (:func:`pipeline.evaluation.evaluate`,
mean PSNR over the split's samples, RGB). ``--extra NAME=FOLDER`` scores another model folder as
``NAME`` beside them, e.g. the model at the end of pre-training: train it with
``tasks.<task>.train.steps: 0`` (``python -m stages.train --task dehaze --seed S --out FOLDER``).
``key=value`` lines, one per split x method x seed, then per seed the gap ``learned −
no_guidance`` on each split; last, ``sign_agreement``: the fraction of seeds whose gap has the
same sign on validation as on test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import io  # noqa: E402
from pipeline.checkpoint import load_control, load_model  # noqa: E402
from pipeline.config import ConfigError, EvaluateConfig, params_from_dict  # noqa: E402
from pipeline.datasets import iter_split, sample_rows  # noqa: E402
from pipeline.evaluation import Methods, evaluate  # noqa: E402

CONTROLS = ("no_guidance", "estimated_guidance")


def folder_methods(task: str, cfg: EvaluateConfig, folder: Path, extra: bool, shared: dict) -> Methods:
    """The methods of ``folder``: ``input``, ``classical``, ``learned`` and the controls found in
    it (``extra``: the folder's model alone, as ``learned``), with the project's ``evaluate``
    settings ``cfg``; ``shared`` keeps what no model changes (``classical``) once per sample."""
    cpu = torch.device("cpu")
    model, denoiser, _ = load_model(folder / "model.pt", task=task, device=cpu)
    controls = {} if extra else {c: load_control(folder / c / "model.pt", task, c, cpu)
                                 for c in CONTROLS if (folder / c / "model.pt").is_file()}
    names = ("learned",) if extra else ("input", "classical", "learned", *controls)
    return Methods(task, names, model, cpu, denoiser, controls, None, cfg.nominal_sigma / 100.0,
                   cfg.ircnn_iters, cfg.dpir_iters, shared=shared)


def split_psnr(methods: Methods, data: Path, split: str) -> dict[str, float]:
    """Mean PSNR per method on ``split`` of the task's data folder ``data``."""
    prepared, degraded = data / "prepared", data / "degraded"
    result = evaluate(iter_split(prepared, degraded, sample_rows(degraded, split)), methods, seed=0)
    return {m: float(v["psnr_mean"]) for m, v in result.metrics["methods"].items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", type=Path, default=ROOT, help="a project that `dvc repro` has run")
    p.add_argument("--task", choices=("derain", "dehaze"), default="dehaze")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    p.add_argument("--splits", default="val,test")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FOLDER",
                   help="another model folder (model.pt) to score, as NAME; repeatable")
    args = p.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",")]
    splits = args.splits.split(",")
    extras = []
    for item in args.extra:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            p.exit(2, f"error: --extra {item!r}: expected NAME=FOLDER\n")
        extras.append((name, Path(folder)))
    data = args.project / "data" / args.task
    folders = [(f"seed{s}", args.project / "models" / args.task / f"seed-{s}", False) for s in seeds]
    folders += [(name, folder, True) for name, folder in extras]
    for _, folder, _ in folders:
        if not (folder / "model.pt").is_file():
            p.exit(2, f"error: {folder / 'model.pt'}: missing (run `dvc repro` there first)\n")
    scores: dict[tuple[str, str], dict[str, float]] = {}
    params_file = args.project / "params.yaml"
    try:
        cfg = params_from_dict(io.read_yaml(params_file), args.task).evaluate
    except (io.InputError, ConfigError) as exc:
        p.exit(2, f"error: {params_file}: {exc}\n")
    shared: dict = {}
    try:
        for label, folder, extra in folders:  # each model loaded once, scored on every split
            methods = folder_methods(args.task, cfg, folder, extra, shared)
            for split in splits:
                scores[split, label] = split_psnr(methods, data, split)
                for method, value in scores[split, label].items():
                    key = f"{split}_{label}" if extra else f"{split}_{method}_{label}"
                    print(f"{key}={value:.3f}", flush=True)
    except io.InputError as exc:
        p.exit(2, f"error: {exc}\n")
    gaps = {}
    for s in seeds:
        for split in splits:
            got = scores[split, f"seed{s}"]
            if "no_guidance" in got:
                gaps[split, s] = got["learned"] - got["no_guidance"]
                print(f"{split}_learned_minus_no_guidance_seed{s}={gaps[split, s]:+.3f}")
    if {"val", "test"} <= set(splits) and all(("val", s) in gaps for s in seeds):
        agree = np.mean([np.sign(gaps["val", s]) == np.sign(gaps["test", s]) for s in seeds])
        print(f"sign_agreement={agree:.2f}")


if __name__ == "__main__":
    main()
