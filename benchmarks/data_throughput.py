"""Is training starved by patch synthesis? Patches synthesised per second against training steps per second.

    python benchmarks/data_throughput.py [--task deblur] [--profile profiles/gpu.yaml] [--batches 30]
        [--steps 5] [--device auto] [--threads 0]

The training patches are degraded on the fly, on the CPU, by the task's sampler
(``pipeline.bilevel.setup.patch_sampler``: blur + noise for deblurring, streaks / haze for the
others), in the training process, between steps. This times the two halves apart, with the
params of ``params.yaml`` (``--profile``: overrides merged on, e.g. the paper's scale):

* synthesis: ``--batches`` calls of the sampler's ``degraded_batch(train.batch_size)`` (what one
  bilevel step reads) on the scikit-image default images, in the process or, with
  ``--data-workers N`` (default ``train.data_workers``), by N worker processes as the trainer
  draws them (``pipeline.batches``; the pool's start-up not timed);
* model: ``--steps`` bilevel steps (``train.strategy``, ``train.amp``) of the seeded model on
  batches made beforehand, on ``--device``, after one untimed warm-up step.

Prints ``key=value`` lines; the last, ``synthesis_over_model``, is how many times faster the
synthesis runs than the model consumes batches: below 1, the device waits for the CPU (give the
synthesis worker processes); far above 1, it never does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.batches import BatchSpec, Prefetcher, worker_pool  # noqa: E402
from pipeline.bilevel.setup import init_model, patch_sampler  # noqa: E402
from pipeline.bilevel.strategies import make_strategy, strategy_options  # noqa: E402
from pipeline.bilevel.trainer import bind_physics  # noqa: E402
from pipeline.config import merge, params_from_dict  # noqa: E402
from pipeline.data import SKIMAGE_DEFAULT, hwc_to_chw, limit_size, load_skimage, to_channels  # noqa: E402
from pipeline.device import amp_dtype, autocast, pick_device, set_threads, to_device  # noqa: E402
from pipeline.generators.seeds import rng_for  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="deblur", choices=("deblur", "derain", "dehaze"))
    p.add_argument("--profile", default=None, help="overrides merged onto params.yaml (e.g. profiles/gpu.yaml)")
    p.add_argument("--batches", type=int, default=30, help="batches synthesised (timed)")
    p.add_argument("--steps", type=int, default=5, help="bilevel steps of the model (timed)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: base.device)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--data-workers", type=int, default=None,
                   help="synthesis in this many worker processes (default: train.data_workers; 0: in-process)")
    args = p.parse_args()
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.profile:
        data = merge(data, yaml.safe_load(Path(args.profile).read_text()))
    params = params_from_dict(data, args.task)
    cfg = params.train
    set_threads(args.threads)
    device = pick_device(args.device or params.base.device)
    gray = args.task == "deblur"
    images = [hwc_to_chw(limit_size(to_channels(load_skimage(n), gray=gray), params.prepare.max_side))
              for n in SKIMAGE_DEFAULT]
    images = [im for im in images if min(im.shape[1:]) >= cfg.patch_size]
    rng = rng_for(params.base.seed, "train-stream")
    sampler = patch_sampler(params, images, rng)

    workers = cfg.data_workers if args.data_workers is None else args.data_workers
    n = max(args.batches, args.steps + 1)
    spec = BatchSpec(cfg.batch_size, cfg.pretrain_sigma_max / 255.0, True)
    if workers:  # as the trainer draws them: a spawned pool, 2 x workers batches ahead
        with worker_pool(sampler, workers) as pool:
            with Prefetcher(pool, 0, "bilevel", spec, 0, workers, workers) as warm:  # start-up, not timed
                for _ in range(workers):
                    warm.next()
            t0 = time.perf_counter()
            with Prefetcher(pool, 0, "bilevel", spec, workers, workers + n, 2 * workers) as prefetcher:
                batches = [prefetcher.next() for _ in range(n)]
            synthesis_seconds = (time.perf_counter() - t0) / n
    else:
        sampler.degraded_batch(cfg.batch_size)  # warm-up: kernel FFT plans, first allocations
        t0 = time.perf_counter()
        batches = [sampler.degraded_batch(cfg.batch_size) for _ in range(n)]
        synthesis_seconds = (time.perf_counter() - t0) / n

    model = init_model(params.model, images[0].shape[0], args.task, params.base.seed).to(device)
    strategy = make_strategy(cfg.strategy, model, cfg.lr, cfg.lr_inner, cfg.guidance_weight, **strategy_options(cfg))
    dtype = amp_dtype(cfg.amp, device)
    model.train()

    def step(b: dict) -> None:
        b = {k: to_device(v, device) for k, v in b.items()}
        with autocast(device, dtype is not None, dtype):
            strategy.step({"physics": bind_physics(b["y"], b.get("kernel")), "x": b["x"], "target": b["target"]})

    step(batches[0])  # warm-up (cuDNN, allocator)
    sync(device)
    t0 = time.perf_counter()
    for b in batches[1:args.steps + 1]:
        step(b)
    sync(device)
    model_seconds = (time.perf_counter() - t0) / args.steps

    n_params = sum(p.numel() for p in model.parameters())
    print(f"task={args.task}")
    print(f"profile={args.profile or 'params.yaml'}")
    print(f"device={device}")
    print(f"amp={cfg.amp}")
    print(f"torch_threads={torch.get_num_threads()}")
    print(f"data_workers={workers}")
    print(f"batch_size={cfg.batch_size}")
    print(f"patch_size={cfg.patch_size}")
    print(f"stages={params.model.stages}")
    print(f"parameters={n_params}")
    print(f"synthesis_seconds_per_batch={synthesis_seconds:.4f}")
    print(f"patches_per_second={cfg.batch_size / synthesis_seconds:.1f}")
    print(f"model_seconds_per_step={model_seconds:.4f}")
    print(f"synthesis_steps_per_second={1 / synthesis_seconds:.2f}")
    print(f"model_steps_per_second={1 / model_seconds:.3f}")
    print(f"synthesis_over_model={model_seconds / synthesis_seconds:.1f}")


if __name__ == "__main__":
    main()
