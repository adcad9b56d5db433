"""DVC stage ``train``: pre-train the conditioned denoiser, then train the unfolded model bilevel.

    python -m stages.train --params params.yaml --task deblur --prepared data/deblur/prepared \
        --degraded data/deblur/degraded --out models/deblur --checkpoint checkpoints/deblur/train.pt

(every path defaults to the task's folder: ``data/<task>/...``, ``models/<task>``, ``checkpoints/<task>``).

``--guidance none`` trains the ablation instead (``model.guidance`` overridden: the same model and
training without hyper-guidance); the DVC stage ``ablate`` runs it for the tasks of
``tasks.ablate`` into ``models/<task>/no_guidance``, which ``evaluate`` scores as ``no_guidance``.

Checkpoints every ``train.checkpoint_every`` steps to ``--checkpoint`` (kept by DVC between
runs: ``persist``); a re-run after an interruption resumes from it when the configuration is
unchanged. Writes ``model.pt`` (weights_only-loadable), ``history.csv`` and ``train.json``, and
logs the model to MLflow in its PyTorch format (``runs:/<run>/model``, registered as
``hyperguide-<task>``: ``models:/hyperguide-deblur/<version>``), the checkpoint alongside.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.bilevel.trainer import Trainer, ValSample
from pipeline.checkpoint import MODEL_FORMAT, save_model
from pipeline.config import to_dict
from pipeline.data import hwc_to_chw
from pipeline.patches import NoiseSpec, PatchSampler, TaskPatchSampler
from pipeline.device import pick_device, set_threads
from pipeline.enhance import PackagedDeblur
from pipeline.generators.kernels import sample_kernel
from pipeline.generators.seeds import derive_seed, rng_for
from pipeline.models.factory import build_model
from pipeline.synthesis import task_spec
from stages.common import TaskPaths, fill_paths, log, load_params, parser, run_main
from stages.tracking import stage_run


def finite_or_none(v: float | None) -> float | None:
    return v if v is not None and np.isfinite(v) else None


def log_mlflow_model(tracker, model, checkpoint: Path, channels: int, params) -> str:
    """The trained model in MLflow's PyTorch format, registered as ``hyperguide-<task>``.

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
                                         registered_model_name=f"hyperguide-{params.base.task}")


def training_setup(params, prepared: Path, degraded: Path) -> tuple:
    """What the bilevel training of ``params`` reads and builds: ``(train images (C, H, W),
    validation samples, channels, patch sampler, model, config key, sampler rng)``. Shared by
    this stage and the sweep's trials (``stages.sweep``), so both train exactly alike."""
    cfg, seed, task = params.train, params.base.seed, params.base.task
    manifest = io.read_csv(prepared / "manifest.csv")
    channels = int(manifest[0]["channels"])
    gray = channels == 1
    images = [hwc_to_chw(io.read_image(prepared / "images" / f"{r['name']}.png", gray=gray))
              for r in manifest if r["split"] == "train"]
    if not images:
        raise io.InputError(f"{prepared / 'manifest.csv'}: no image in the train split")
    val_rows = [r for r in io.read_csv(degraded / "samples.csv") if r["split"] == "val"]
    # an evenly spread subset keeps the training curve cheap (tune and evaluate use all of them)
    step = max(1, -(-len(val_rows) // cfg.val_samples))
    val = []
    for r in val_rows[::step]:
        s = io.load_npz(degraded / "samples" / f"{r['sample_id']}.npz")
        x = hwc_to_chw(io.read_image(prepared / "images" / f"{r['image']}.png", gray=gray))
        target, kernel = (s["sigma"], torch.from_numpy(s["kernel"])) if task == "deblur" else (s["target"], None)
        val.append(ValSample(torch.from_numpy(s["y"])[None], torch.from_numpy(x)[None], torch.from_numpy(target)[None],
                             kernel))

    rng = rng_for(seed, "train-stream")
    if task == "deblur":
        # Training always draws from generated kernels: user kernel files are for evaluation.
        krng = rng_for(seed, "train-kernels")
        kernels = [sample_kernel(krng, params.degrade.kernels.motion_fraction, params.degrade.kernels.max_size)
                   for _ in range(cfg.train_kernels)]
        noise = NoiseSpec(*params.degrade.noise.range, params.degrade.noise.mode, params.degrade.noise.spread)
        sampler = PatchSampler(images, kernels, noise, cfg.patch_size, params.degrade.kernels.max_size, rng)
    else:  # rain and haze patches are degraded by the degrade stage's generators, on the fly
        sampler = TaskPatchSampler(images, task_spec(task, params.degrade), cfg.patch_size, rng)
    model = build_model(params.model, channels, task=task)
    model.activation_checkpointing = cfg.activation_checkpointing
    # The data is part of the key too: a checkpoint trained on other images never resumes here.
    key_src = json.dumps({**{k: to_dict(getattr(params, k)) for k in ("base", "prepare", "degrade", "model", "train")},
                          "data": [io.sha256_file(prepared / "manifest.csv"), io.sha256_file(degraded / "samples.csv")]},
                         sort_keys=True)
    config_key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return images, val, channels, sampler, model, config_key, rng


def train(params, prepared: Path, degraded: Path, checkpoint: Path | None, device: torch.device,
          log_fn=None, progress: bool = False) -> tuple:
    """Train as the stage does (seeded from ``params``), resuming from ``checkpoint`` when it
    matches: ``(trainer, model, channels, seconds)``. No tracker, no output files: the caller
    (a sweep trial) decides what to keep."""
    torch.manual_seed(derive_seed(params.base.seed, "init") % 2**31)
    images, val, channels, sampler, model, config_key, rng = training_setup(params, prepared, degraded)
    trainer = Trainer(model, sampler, params.train, device, rng, checkpoint, config_key, val, log_fn, progress=progress)
    t0 = time.perf_counter()
    trainer.run()
    return trainer, model, channels, time.perf_counter() - t0


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--prepared", default=None, help="default data/<task>/prepared")
    p.add_argument("--degraded", default=None, help="default data/<task>/degraded")
    p.add_argument("--out", default=None, help="default models/<task>")
    p.add_argument("--checkpoint", default=None, help="default checkpoints/<task>/train.pt")
    p.add_argument("--guidance", choices=("learned", "none", "oracle"), default=None,
                   help="override model.guidance (none: the no-guidance ablation); the paths then default to the "
                        "variant's: models/<task>/no_guidance and checkpoints/<task>-no_guidance/train.pt for none")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    if args.guidance is not None:
        params = dataclasses.replace(params, model=dataclasses.replace(params.model, guidance=args.guidance))
        variant = TaskPaths(params.base.task).variant(args.guidance)
        args.out = args.out or str(variant.models)
        args.checkpoint = args.checkpoint or str(variant.checkpoint)
    fill_paths(args, params.base.task, prepared="prepared", degraded="degraded", out="models", checkpoint="checkpoint")
    cfg, seed = params.train, params.base.seed
    set_threads(params.base.threads)
    torch.manual_seed(derive_seed(seed, "init") % 2**31)
    device = pick_device(params.base.device)
    prepared, degraded, out = Path(args.prepared), Path(args.degraded), Path(args.out)

    images, val, channels, sampler, model, config_key, rng = training_setup(params, prepared, degraded)

    # the DVC stage this run is (``ablate`` trains the no-guidance variant), as the MLflow tag says
    stage = {"learned": "train", "none": "ablate"}.get(params.model.guidance, f"train-{params.model.guidance}")
    with stage_run(stage, params, {"device": str(device), "guidance": params.model.guidance}) as tracker:
        n_params = sum(p.numel() for p in model.parameters())
        tracker.log_metrics({"n_parameters": n_params, "n_train_images": len(images), "n_val_samples": len(val)})
        log.info("training on %s: %d train images, %d val samples, %d parameters", device, len(images), len(val), n_params)

        def log_row(row: dict) -> None:
            offset = 0 if row["phase"] == "pretrain" else cfg.pretrain_steps
            tracker.log_metrics({f"{row['phase']}/{k}": v for k, v in row.items() if k not in ("phase", "step")},
                                step=offset + row["step"])

        trainer = Trainer(model, sampler, cfg, device, rng, Path(args.checkpoint), config_key, val, log_row,
                          progress=not args.quiet)
        t0 = time.perf_counter()
        history = trainer.run()
        seconds = time.perf_counter() - t0
        save_model(out / "model.pt", model.cpu(), params.model, channels, params.base.task, trainer.pretrained,
                   extra={"config_key": config_key})
        io.write_csv(out / "history.csv", history)
        last = {ph: [r for r in history if r["phase"] == ph][-1] for ph in ("pretrain", "bilevel")
                if any(r["phase"] == ph for r in history)}
        summary = {"seconds": round(seconds, 2), "resumed_from_step": trainer.resumed_from, "n_parameters": n_params,
                   "device": str(device), **{f"{ph}_val_psnr": finite_or_none(r.get("val_psnr")) for ph, r in last.items()}}
        io.write_json(out / "train.json", summary)
        tracker.log_metrics({"train_seconds": seconds})
        tracker.log_artifact(out / "model.pt", "model")
        if params.model.guidance == "oracle":  # it needs the true noise map: nothing to serve
            log.info("oracle guidance: not logged as an MLflow model (model.pt is logged as an artifact)")
        elif params.base.task != "deblur":
            log.info("task %s: not logged in MLflow's PyTorch format (model.pt is logged as an artifact)",
                     params.base.task)
        else:
            uri = log_mlflow_model(tracker, model, out / "model.pt", channels, params)
            log.info("logged the model to MLflow as %s (and runs:/%s/model)", uri, tracker.run_id)
        tracker.log_artifact(out / "history.csv")
        log.info("trained in %.1f s; %s", seconds, {k: v for k, v in summary.items() if "psnr" in k})


if __name__ == "__main__":
    run_main(main)
