"""DVC stage ``train``: pre-train the conditioned denoiser, then train the unfolded model bilevel.

    python -m stages.train --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --out models/deblur --checkpoint checkpoints/deblur/train.pt

(every path defaults to the task's folder: ``data/<task>/...``, ``models/<task>``, ``checkpoints/<task>``).

``--seed S`` trains with training seed ``S`` (default ``base.seed``; ``dvc repro`` runs every seed of
``base.seeds``) into ``models/<task>/seed-<S>``. ``--control NAME`` trains a control instead: the
same model and training with only ``model.guidance`` replaced (``no_guidance``: ``none``, the
nominal schedule; ``estimated_guidance``: ``estimated``, a classical per-image estimate in place of
the proxy; ``direct_cnn``: ``direct``, no unfolded model at all but a plain residual CNN of the same
parameter count, trained on the same batches for ``pretrain_steps + steps`` steps); the DVC stage ``ablate`` runs every control of ``tasks.controls`` for every task and
seed into ``models/<task>/seed-<S>/<control>``, which ``evaluate`` scores under the control's name.

The data, patch sampler, seeded model and trainer are :mod:`pipeline.bilevel.setup`'s (the sweep's
trials train through it too). Checkpoints every ``train.checkpoint_every`` steps to ``--checkpoint``
(kept by DVC between runs: ``persist``); a re-run after an interruption resumes from it when the
configuration is unchanged. Writes ``model.pt`` (weights_only-loadable), ``history.csv`` and
``train.json`` (``seconds`` of wall clock and ``cpu_seconds`` of process CPU time, every thread:
the budget the ``tune`` stage gives the baselines; both of the whole training, a resumed run's
earlier processes up to its checkpoint included; ``train.data_workers``' processes are not counted), and logs the model to MLflow in its PyTorch format (``runs:/<run>/model``), the checkpoint
alongside. ``--register`` (what ``dvc.yaml`` passes) also registers it as ``hyperguide-<task>``
(``models:/hyperguide-deblur/<version>``): a by-hand run into a scratch folder never adds a version.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.bilevel.setup import build_training, run_training
from pipeline.checkpoint import MODEL_FORMAT, save_model
from pipeline.config import CONTROLS, Params, to_dict
from pipeline.device import pick_device, set_threads, tune_for_fixed_shapes
from pipeline.models.packaged import PackagedDeblur
from stages.common import TaskPaths, fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def finite_or_none(v: float | None) -> float | None:
    return v if v is not None and np.isfinite(v) else None


def log_mlflow_model(tracker, model, checkpoint: Path, channels: int, params, register: bool) -> str:
    """The trained model in MLflow's PyTorch format, registered as ``hyperguide-<task>`` when ``register``.

    The served module takes the observation and the blur as one tensor (MLflow's PyTorch flavour
    passes a single array): ``(B, C + 1, H, W)``, the last channel the PSF centred at
    ``(H // 2, W // 2)``; H and W even (the exported graph is specialised on the proxy's
    stride-2 grid). ``stages.enhance --model`` ignores that graph and loads ``checkpoint``,
    logged alongside, with ``torch.load(weights_only=True)``.
    """
    packaged = PackagedDeblur(model.cpu().eval())
    rng = np.random.default_rng(0)
    example = np.zeros((2, channels + 1, 32, 32), np.float32)  # batch 2: a size-1 batch would be exported static
    example[:, :channels] = rng.random((2, channels, 32, 32), dtype=np.float32)
    example[:, channels, 16, 16] = 1.0  # a delta PSF at the centre
    metadata = {"format": MODEL_FORMAT, "task": params.base.task, "channels": channels,
                "model_config": json.dumps(to_dict(params.model)), "checkpoint": f"extra_files/{checkpoint.name}",
                "input": "(B, C+1, H, W) float32: C observation channels in [0, 1], then the PSF centred at (H//2, W//2);"
                         " H, W even"}
    with torch.no_grad():
        return tracker.log_pytorch_model(packaged, checkpoint, example, channels, metadata,
                                         registered_model_name=f"hyperguide-{params.base.task}" if register else None)


def resolve(params: Params, seed: int | None, guidance: str | None) -> Params:
    """The params a run trains with: ``base.seed`` set to ``seed`` and ``model.guidance`` to
    ``guidance`` (a control's), each when given; nothing else changes, so a control differs from
    the learned model of its seed in its guidance alone."""
    if seed is not None:
        params = dataclasses.replace(params, base=dataclasses.replace(params.base, seed=seed))
    if guidance is not None:
        params = dataclasses.replace(params, model=dataclasses.replace(params.model, guidance=guidance))
    return params


def main() -> None:
    p = parser(__doc__, data=True)
    p.add_argument("--out", default=None, help="default models/<task>")
    p.add_argument("--checkpoint", default=None, help="default checkpoints/<task>/train.pt")
    p.add_argument("--seed", type=int, default=None, help="training seed (default base.seed)")
    p.add_argument("--control", choices=tuple(CONTROLS), default=None,
                   help="train a control: model.guidance replaced by the control's (no_guidance: none, "
                        "estimated_guidance: estimated, direct_cnn: direct); paths default to "
                        "models/<task>/seed-<S>/<control>")
    p.add_argument("--guidance", choices=("learned", "none", "estimated", "oracle", "direct"), default=None,
                   help="override model.guidance (as --control does, by mode: none, estimated, oracle)")
    p.add_argument("--register", action="store_true",
                   help="register the MLflow model as hyperguide-<task> (the pipeline's own run does; by hand, only "
                        "when this model is the one models:/hyperguide-<task>/latest should point at)")
    args = p.parse_args()
    if args.control is not None and args.guidance not in (None, CONTROLS[args.control]):
        p.error(f"--control {args.control} trains with guidance {CONTROLS[args.control]!r}, not {args.guidance!r}")
    guidance = CONTROLS[args.control] if args.control else args.guidance
    params = resolve(load_params(args.params, args.task), args.seed, guidance)
    if guidance is not None:
        variant = TaskPaths(params.base.task, params.base.seed).variant(guidance)
        args.out = args.out or str(variant.models)
        args.checkpoint = args.checkpoint or str(variant.checkpoint)
    fill_paths(args, params.base.task, params.base.seed, prepared="prepared", degraded="degraded", out="models",
               checkpoint="checkpoint")
    cfg = params.train
    set_threads(params.base.threads)
    device = pick_device(params.base.device)
    tune_for_fixed_shapes(device)  # every training patch has the same shape
    out = Path(args.out)
    setup = build_training(params, args.prepared, args.degraded)
    model = setup.model

    # the DVC stage this run is (``ablate`` trains the controls), as the MLflow tag says
    controls = {mode: control for control, mode in CONTROLS.items()}
    stage = "train" if params.model.guidance == "learned" else \
        "ablate" if params.model.guidance in controls else f"train-{params.model.guidance}"
    tags = {"device": str(device), "guidance": params.model.guidance, "seed": str(params.base.seed),
            **({"control": controls[params.model.guidance]} if params.model.guidance in controls else {})}
    with stage_run(stage, params, tags) as tracker:
        n_params = sum(p.numel() for p in model.parameters())
        tracker.log_metrics({"n_parameters": n_params, "n_train_images": len(setup.images), "n_val_samples": len(setup.val)})
        log.info("training on %s (amp %s): %d train images, %d val samples, %d parameters", device, cfg.amp,
                 len(setup.images), len(setup.val), n_params)

        def log_row(row: dict) -> None:
            offset = cfg.pretrain_steps if row["phase"] == "bilevel" else 0  # direct_cnn: one phase from 0
            tracker.log_metrics({f"{row['phase']}/{k}": v for k, v in row.items() if k not in ("phase", "step")},
                                step=offset + row["step"])

        # process CPU time, every thread (what a CPU-second budget counts), over every process that
        # trained this model: a run resumed from its checkpoint records the whole training's
        trainer, seconds = run_training(setup, params, Path(args.checkpoint), device, log_row, progress=not args.quiet)
        cpu_seconds = trainer.spent["cpu_seconds"]
        history = trainer.history
        save_model(out / "model.pt", model.cpu(), params.model, setup.channels, params.base.task, trainer.pretrained,
                   extra={"config_key": setup.config_key})
        io.write_csv(out / "history.csv", history)
        last = {ph: [r for r in history if r["phase"] == ph][-1] for ph in ("pretrain", "bilevel", "direct")
                if any(r["phase"] == ph for r in history)}
        summary = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "seed": params.base.seed,
                   "guidance": params.model.guidance, "resumed_from_step": trainer.resumed_from, "n_parameters": n_params,
                   "device": str(device), **{f"{ph}_val_psnr": finite_or_none(r.get("val_psnr")) for ph, r in last.items()}}
        io.write_json(out / "train.json", summary)
        tracker.log_metrics({"train_seconds": seconds, "train_cpu_seconds": cpu_seconds})
        tracker.log_artifact(out / "model.pt", "model")
        if params.model.guidance != "learned":  # a control or a bound: nothing to serve
            log.info("guidance %s: not logged as an MLflow model (model.pt is logged as an artifact)",
                     params.model.guidance)
        elif params.base.task != "deblur":
            log.info("task %s: not logged in MLflow's PyTorch format (model.pt is logged as an artifact)",
                     params.base.task)
        else:
            uri = log_mlflow_model(tracker, model, out / "model.pt", setup.channels, params, args.register)
            log.info("logged the model to MLflow as %s (and runs:/%s/model)", uri, tracker.run_id)
        tracker.log_artifact(out / "history.csv")
        log.info("trained in %.1f s; %s", seconds, {k: v for k, v in summary.items() if "psnr" in k})


if __name__ == "__main__":
    run_main(main)
