"""Cost of one outer step per bilevel strategy against ``alternating``, K = 5.

    python benchmarks/strategy_cost.py [--steps 8] [--batch 4] [--patch 48] [--device cpu]

Each strategy runs in its own process (a clean peak-memory figure): a few warm-up steps, then
``--steps`` timed steps on fixed batches. Peak memory: ``torch.cuda.max_memory_allocated`` on a
GPU; on a CPU the growth of the process's peak RSS over its RSS before the first step (an upper
bound of what the step allocates). Prints ``key=value`` lines; the issue's target: ``unrolled``
and ``implicit`` at T = 1 within 3x of ``alternating`` (``*_time_ratio``).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (train.strategy, model overrides, strategy options)
CASES = {
    "alternating": ("alternating", {}, {}),
    "joint": ("joint", {}, {}),
    "unrolled_T1": ("unrolled", {}, {"inner_steps": 1}),
    "implicit_T1_neumann": ("implicit", {}, {"inner_steps": 1, "implicit_method": "neumann", "implicit_iterations": 3}),
    "implicit_T1_cg": ("implicit", {}, {"inner_steps": 1, "implicit_method": "cg", "implicit_iterations": 3}),
    "unrolled_T3": ("unrolled", {}, {"inner_steps": 3}),
    "none": ("alternating", {"guidance": "none"}, {}),
    "oracle": ("alternating", {"guidance": "oracle"}, {}),
    # stage proxies: the inner problem depends on omega (the hypergradients' cross term is not zero)
    "alternating_per_stage": ("alternating", {"proxy_sharing": "per_stage"}, {}),
    "unrolled_T1_per_stage": ("unrolled", {"proxy_sharing": "per_stage"}, {"inner_steps": 1}),
    "implicit_T1_per_stage": ("implicit", {"proxy_sharing": "per_stage"}, {"inner_steps": 1, "implicit_iterations": 3}),
    "implicit_T1_J1_per_stage": ("implicit", {"proxy_sharing": "per_stage"}, {"inner_steps": 1, "implicit_iterations": 1}),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(case: str, steps: int, batch: int, patch: int, device_name: str, threads: int) -> dict:
    """One strategy's seconds per outer step and peak memory (MB), in this process."""
    import numpy as np
    import torch

    from pipeline.bilevel.strategies import make_strategy
    from pipeline.config import ModelConfig
    from pipeline.generators.kernels import sample_kernel
    from pipeline.models.factory import build_model
    from pipeline.patches import NoiseSpec, PatchSampler
    from pipeline.physics.blur import BlurPhysics

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    strategy, model_over, options = CASES[case]
    device = torch.device(device_name)
    model = build_model(ModelConfig(stages=5, **model_over), 1).to(device)
    rng = np.random.default_rng(0)
    images = [rng.random((1, 96, 96)).astype(np.float32)]
    kernels = [sample_kernel(np.random.default_rng(i), max_size=15) for i in range(8)]
    sampler = PatchSampler(images, kernels, NoiseSpec(1, 7), patch, 15, rng)
    batches = []
    for _ in range(steps + 2):
        b = {k: v.to(device) for k, v in sampler.blur_batch(batch).items()}
        batches.append({"physics": BlurPhysics(b["y"], b["kernel"]), "x": b["x"], "target": b["target"]})
    step = make_strategy(strategy, model, 1e-3, 1e-3, 100.0, **options)
    base = rss_mb()
    for b in batches[:2]:  # warm-up (allocator, kernels)
        step.step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches[2:]:
        step.step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps  # all threads' CPU time: less sensitive to other load
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"seconds_per_step": seconds, "cpu_seconds_per_step": cpu, "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.batch, args.patch, args.device, args.threads)))
        return
    results = {}
    for case in args.cases.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", case, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--patch", str(args.patch), "--device", args.device, "--threads",
                              str(args.threads)], capture_output=True, text=True, check=True)
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{case}_seconds_per_step={results[case]['seconds_per_step']:.4f}")
        print(f"{case}_cpu_seconds_per_step={results[case]['cpu_seconds_per_step']:.4f}")
        print(f"{case}_peak_mb={results[case]['peak_mb']:.1f}", flush=True)
    ref = results.get("alternating")
    if ref:
        for case, r in results.items():
            print(f"{case}_time_ratio={r['seconds_per_step'] / ref['seconds_per_step']:.3f}")
            print(f"{case}_cpu_ratio={r['cpu_seconds_per_step'] / ref['cpu_seconds_per_step']:.3f}")
        same = results.get("alternating_per_stage")
        if same:  # against alternating on the same (per-stage) model
            for case, r in results.items():
                if case.endswith("_per_stage") and case != "alternating_per_stage":
                    print(f"{case}_cpu_ratio_vs_alternating_per_stage="
                          f"{r['cpu_seconds_per_step'] / same['cpu_seconds_per_step']:.3f}")
        t1 = [c for c in ("unrolled_T1", "implicit_T1_neumann", "implicit_T1_cg") if c in results]
        if t1:
            worst = max(results[c]["cpu_seconds_per_step"] for c in t1) / ref["cpu_seconds_per_step"]
            print(f"worst_hypergradient_T1_cpu_ratio={worst:.3f}")


if __name__ == "__main__":
    main()
