"""Training memory of the unrolled model against its number of stages K, with and without
activation checkpointing.

    python benchmarks/memory_vs_k.py [--max-k 10] [--batch-size 8] [--patch-size 64] [--device auto]

For each K, a fresh process builds the default model (``params.yaml``'s ``model`` section with
``stages: K``) and runs one training step (forward, reconstruction loss, backward) on a seeded
batch, first with activation checkpointing (``UnfoldedHQS.activation_checkpointing``, the
``train.activation_checkpointing`` option), then without. Peak memory is the peak resident set
size minus the resident size before the step (on CUDA ``torch.cuda.max_memory_allocated``
above the allocated memory before it); the process-wide peak only grows, so the smaller
(checkpointed) step is measured first. Prints ``key=value`` lines per K, then the mean saving
and, last, ``saving_percent_at_k<max>``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(k: int, batch: int, patch: int, device_name: str, params_path: str) -> dict:
    """Peak memory and seconds of one training step, checkpointed then not."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pipeline.device import pick_device
    from pipeline.generators.kernels import sample_kernel
    from pipeline.models.factory import build_model
    from pipeline.physics.blur import BlurPhysics
    from stages.common import load_params

    device = pick_device(device_name)
    cfg = replace(load_params(params_path).model, stages=k)
    torch.manual_seed(0)
    model = build_model(cfg, 1).to(device).train()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch, 1, patch, patch), dtype=np.float32)).to(device)
    kernel = torch.from_numpy(sample_kernel(rng, 0.6, 15).kernel).to(device)
    physics = BlurPhysics(BlurPhysics(x, kernel).A(x) + 0.03 * torch.randn_like(x), kernel)
    # warm-up on a tiny batch: thread pools and kernel caches are set up before the baseline,
    # without raising the high-water mark much
    small = BlurPhysics(x[:1, :, :16, :16], torch.ones(1, 1, device=device))
    for ckpt in (True, False):
        model.activation_checkpointing = ckpt
        F.mse_loss(model(small).x, x[:1, :, :16, :16]).backward()
    result = {"k": k}
    # one baseline for both steps: memory freed after the first step stays resident (glibc keeps
    # it), and the second step reuses it, so its peak is still the baseline plus its own need
    before = rss_bytes()
    for ckpt in (True, False):  # ascending peaks: the process-wide high-water mark stays meaningful
        model.activation_checkpointing = ckpt
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        F.mse_loss(model(physics).x, x).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        name = "checkpointed" if ckpt else "plain"
        result[f"{name}_bytes"] = max(peak, 0)
        result[f"{name}_seconds"] = time.perf_counter() - t0
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-k", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_size, args.patch_size, args.device, args.params)))
        return
    mb = 1 / 2**20
    rows = []
    for k in range(1, args.max_k + 1):
        cmd = [sys.executable, __file__, "--worker", str(k), "--batch-size", str(args.batch_size),
               "--patch-size", str(args.patch_size), "--device", args.device, "--params", args.params]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            sys.exit(f"K={k} failed:\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"k{k}_plain_mb={r['plain_bytes'] * mb:.1f}")
        print(f"k{k}_checkpointed_mb={r['checkpointed_bytes'] * mb:.1f}")
        print(f"k{k}_plain_seconds={r['plain_seconds']:.3f}")
        print(f"k{k}_checkpointed_seconds={r['checkpointed_seconds']:.3f}")
        sys.stdout.flush()
    savings = [1 - r["checkpointed_bytes"] / r["plain_bytes"] for r in rows if r["plain_bytes"] > 0]
    plain_slope = (rows[-1]["plain_bytes"] - rows[0]["plain_bytes"]) / max(len(rows) - 1, 1)
    ckpt_slope = (rows[-1]["checkpointed_bytes"] - rows[0]["checkpointed_bytes"]) / max(len(rows) - 1, 1)
    print(f"batch_size={args.batch_size}")
    print(f"patch_size={args.patch_size}")
    print(f"plain_mb_per_stage={plain_slope * mb:.1f}")
    print(f"checkpointed_mb_per_stage={ckpt_slope * mb:.1f}")
    print(f"mean_saving_percent={100 * sum(savings) / len(savings):.1f}")
    print(f"saving_percent_at_k{rows[-1]['k']}={100 * savings[-1]:.1f}")


if __name__ == "__main__":
    main()
