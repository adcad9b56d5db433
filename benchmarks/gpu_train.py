"""A short training of a task's default model on a device, with and without mixed precision,
beside the CPU figures of the same training.

    python benchmarks/gpu_train.py [--task deblur] [--data data] [--params params.yaml]
        [--device auto] [--amp auto,off] [--reference models/deblur/seed-0/train.json]

Trains as the ``train`` stage does (:func:`pipeline.bilevel.setup.train`: the task's pre-training
and bilevel steps of ``params.yaml``, seed ``base.seed``, on the prepared + degraded data under
``--data/<task>`` that ``dvc repro`` wrote), but without MLflow or output files, once per
``--amp`` mode (``train.amp``: ``auto`` is bfloat16 autocast on CUDA, float32 on the CPU;
``off`` float32), after one short untimed training in every mode (CUDA's and cuDNN's start-up
and autotuning are paid there, not by the first timed mode). ``--reference`` names a ``train.json`` of the same training on another device
(the committed lock's, on the 2-core CPU) whose seconds and validation PSNRs are printed beside.

Prints ``key=value`` lines per mode (``<key>_<mode>``): seconds, steps per second, the validation
PSNR after pre-training and after the bilevel phase, peak device memory; the last line is
``speedup_<last mode>``, the reference's seconds over this run's (or its seconds without a reference).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.bilevel.setup import train  # noqa: E402
from pipeline.config import TASKS  # noqa: E402
from pipeline.device import pick_device, tune_for_fixed_shapes  # noqa: E402
from stages.common import load_params  # noqa: E402


def fmt(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "nan"


def last_val_psnr(history: list[dict], phase: str) -> float | None:
    rows = [r for r in history if r["phase"] == phase and r.get("val_psnr") is not None]
    return float(rows[-1]["val_psnr"]) if rows else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="deblur", choices=TASKS)
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--data", default=str(ROOT / "data"), help="folder holding <task>/prepared and <task>/degraded")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default="auto,off", help="comma-separated train.amp modes, one training each")
    p.add_argument("--reference", default=None, help="train.json of the same training elsewhere (e.g. the CPU's)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    device = pick_device(args.device)
    tune_for_fixed_shapes(device)
    ref = json.loads(Path(args.reference).read_text()) if args.reference else None
    data = Path(args.data) / args.task
    steps = params.train.pretrain_steps + params.train.steps
    print(f"device={device}")
    if device.type == "cuda":
        print(f"device_name={torch.cuda.get_device_name(device).replace(' ', '_')}")
    print(f"task={args.task}")
    print(f"torch={torch.__version__}")
    print(f"steps={steps}")
    print(f"batch_size={params.train.batch_size}")
    print(f"patch_size={params.train.patch_size}")
    if ref is not None:
        print(f"reference_device={ref['device']}")
        print(f"reference_seconds={ref['seconds']}")
        print(f"reference_pretrain_val_psnr={fmt(ref.get('pretrain_val_psnr'))}")
        print(f"reference_bilevel_val_psnr={fmt(ref.get('bilevel_val_psnr'))}")
    modes = [a.strip() for a in args.amp.split(",") if a.strip()]
    for amp in modes:  # warm-up, not timed
        short = dataclasses.replace(params.train, amp=amp, pretrain_steps=min(20, params.train.pretrain_steps),
                                    steps=min(20, params.train.steps))
        train(dataclasses.replace(params, train=short), data / "prepared", data / "degraded", None, device)
    last = ""
    for amp in modes:
        run = dataclasses.replace(params, train=dataclasses.replace(params.train, amp=amp))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer, _, _, seconds = train(run, data / "prepared", data / "degraded", None, device)
        print(f"seconds_{amp}={seconds:.2f}")
        print(f"steps_per_second_{amp}={steps / seconds:.1f}")
        for phase in ("pretrain", "bilevel"):
            print(f"{phase}_val_psnr_{amp}={fmt(last_val_psnr(trainer.history, phase))}")
        if device.type == "cuda":
            print(f"peak_memory_mib_{amp}={torch.cuda.max_memory_allocated(device) / 2**20:.1f}")
        last = f"speedup_{amp}={ref['seconds'] / seconds:.2f}" if ref is not None else f"seconds_{amp}={seconds:.2f}"
    print(last)


if __name__ == "__main__":
    main()
