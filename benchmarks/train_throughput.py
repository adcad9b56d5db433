"""Training throughput of the pipeline's Trainer against a bare PyTorch loop doing the same steps.

    python benchmarks/train_throughput.py [--steps 100] [--batch-size 8] [--patch-size 64]
        [--log-every 20] [--checkpoint-every 100] [--device auto]

Both run the bilevel phase (``alternating``: one Adam step of the proxy on the guidance loss,
then one of all parameters on the reconstruction loss, gradients clipped, cosine learning rate)
of the default model (``params.yaml``'s ``model`` section) on the same seeded patches.

* pipeline: ``pipeline.bilevel.trainer.Trainer.run`` as the train stage runs it: patches
  degraded on the fly by the sampler, history rows logged to MLflow (a temporary SQLite store),
  checkpoints and validation (4 samples) every ``--checkpoint-every`` steps, the final save.
* bare: the same forward/backward/optimiser steps in a plain loop over batches generated
  beforehand (not timed): no data loading, logging, checkpoints or validation.

The bare loop runs before and after the pipeline and its mean time is used (drift from other
load on the machine cancels to first order). Prints ``key=value`` lines, the last
``overhead_percent`` (pipeline time / bare time - 1, in percent).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.bilevel.strategies import GRAD_CLIP  # noqa: E402
from pipeline.bilevel.trainer import Trainer, ValSample  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402
from pipeline.data import load_skimage, to_channels  # noqa: E402
from pipeline.device import autocast, pick_device  # noqa: E402
from pipeline.generators.kernels import sample_kernel  # noqa: E402
from pipeline.generators.seeds import rng_for  # noqa: E402
from pipeline.models.factory import build_model  # noqa: E402
from pipeline.patches import NoiseSpec, PatchSampler  # noqa: E402
from pipeline.physics.blur import BlurPhysics  # noqa: E402
from pipeline.synthesis import degrade  # noqa: E402
from stages.common import load_params  # noqa: E402
from stages.tracking import scratch_run  # noqa: E402

IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "clock")


def setup(params, cfg: TrainConfig, seed: int):
    """Training images (grey, longer side 160), the kernel bank, a fresh sampler and 4 val samples."""
    from pipeline.data import limit_size

    images = [np.moveaxis(limit_size(to_channels(load_skimage(n), gray=True), 160), -1, 0) for n in IMAGES]
    krng = rng_for(seed, "kernels")
    kernels = [sample_kernel(krng, 0.6, params.degrade.kernels.max_size) for _ in range(64)]
    noise = NoiseSpec(*params.degrade.noise.range, params.degrade.noise.mode, params.degrade.noise.spread)
    vrng = np.random.default_rng(seed + 1)
    val = []
    for img in images[:4]:
        s = degrade(img, kernels[0], 0.03, "constant", 0.8, vrng)
        val.append(ValSample(torch.from_numpy(s.y)[None], torch.from_numpy(img)[None],
                             torch.from_numpy(s.sigma_map)[None], torch.from_numpy(s.kernel)))

    def sampler() -> tuple[PatchSampler, np.random.Generator]:
        rng = np.random.default_rng(seed)
        return PatchSampler(images, kernels, noise, cfg.patch_size, params.degrade.kernels.max_size, rng), rng

    return sampler, val


def clipped_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
    opt.step()


def bare_loop(model, batches: list[dict], cfg: TrainConfig, device: torch.device) -> float:
    """The alternating bilevel steps in plain PyTorch; returns the seconds."""
    inner = torch.optim.Adam(model.proxy.parameters(), lr=cfg.lr_inner)
    outer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    t0 = time.perf_counter()
    for step, b in enumerate(batches):
        for opt, lr in ((inner, cfg.lr_inner), (outer, cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / len(batches)))
        with autocast(device):
            g = F.mse_loss(model.proxy(b["y"]).float(), b["target"])
            clipped_step(inner, cfg.guidance_weight * g)
            out = model(BlurPhysics(b["y"], b["kernel"]), target=b["target"])
            clipped_step(outer, F.mse_loss(out.x.float(), b["x"]))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def pipeline_run(model, make_sampler, val, cfg: TrainConfig, device: torch.device, work: Path) -> float:
    """``Trainer.run`` with MLflow logging and checkpoints, as the train stage; returns the seconds."""
    sampler, rng = make_sampler()
    with scratch_run(work, "throughput") as tracker:
        def log_row(row: dict) -> None:
            tracker.log_metrics({f"{row['phase']}/{k}": v for k, v in row.items() if k not in ("phase", "step")},
                                step=row["step"])

        trainer = Trainer(model, sampler, cfg, device, rng, work / "train.pt", "bench", val, log_row, progress=False)
        t0 = time.perf_counter()
        trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    params = load_params(args.params)
    cfg = replace(params.train, strategy="alternating", pretrain_steps=0, steps=args.steps, batch_size=args.batch_size,
                  patch_size=args.patch_size, log_every=args.log_every, checkpoint_every=args.checkpoint_every)
    device = pick_device(args.device)
    make_sampler, val = setup(params, cfg, args.seed)
    sampler, _ = make_sampler()
    batches = [{k: v.to(device) for k, v in sampler.blur_batch(cfg.batch_size).items()} for _ in range(cfg.steps)]

    def fresh_model():
        torch.manual_seed(args.seed)
        return build_model(params.model, 1).to(device)

    bare_loop(fresh_model(), batches[:2], cfg, device)  # warm-up, not timed
    bare = [bare_loop(fresh_model(), batches, cfg, device)]
    with tempfile.TemporaryDirectory(prefix="hyperguide-throughput-") as work:
        pipe = pipeline_run(fresh_model(), make_sampler, val, cfg, device, Path(work))
    bare.append(bare_loop(fresh_model(), batches, cfg, device))
    bare_s = float(np.mean(bare))
    n = cfg.steps * cfg.batch_size
    print(f"device={device}")
    print(f"steps={cfg.steps}")
    print(f"batch_size={cfg.batch_size}")
    print(f"patch_size={cfg.patch_size}")
    print(f"stages={params.model.stages}")
    print(f"log_every={cfg.log_every}")
    print(f"checkpoint_every={cfg.checkpoint_every}")
    print(f"bare_seconds={bare_s:.2f}")
    print(f"bare_seconds_runs={','.join(f'{b:.2f}' for b in bare)}")
    print(f"pipeline_seconds={pipe:.2f}")
    print(f"bare_samples_per_second={n / bare_s:.2f}")
    print(f"pipeline_samples_per_second={n / pipe:.2f}")
    print(f"overhead_percent={100 * (pipe / bare_s - 1):.2f}")


if __name__ == "__main__":
    main()
