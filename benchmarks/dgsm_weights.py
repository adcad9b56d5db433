"""The weights of the ``dgsm`` rain baseline, chosen on the validation split (never on test).

    python benchmarks/dgsm_weights.py [--prepared data/derain/prepared] [--degraded data/derain/degraded]
        [--along 0.3,1,3] [--sparse 0.005,0.02,0.08]

Runs :func:`pipeline.baselines.dgsm.dgsm_derain` with every pair of weights on the validation
samples of a prepared and degraded derain split (``dvc repro degrade@derain`` makes the default
one), scored as ``evaluate`` scores (:func:`pipeline.evaluation.score`). Prints ``key=value``
lines: the mean validation PSNR / Y-PSNR per pair, the module's current weights' score, and last
the best pair (``best=lam_along,lam_sparse``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.baselines import dgsm  # noqa: E402
from pipeline.datasets import read_split  # noqa: E402
from pipeline.evaluation import score  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default=str(ROOT / "data" / "derain" / "prepared"))
    p.add_argument("--degraded", default=str(ROOT / "data" / "derain" / "degraded"))
    p.add_argument("--along", type=floats, default=[0.3, 1.0, 3.0])
    p.add_argument("--sparse", type=floats, default=[0.005, 0.02, 0.08])
    args = p.parse_args()
    samples = read_split(args.prepared, args.degraded, "val")
    print(f"samples={len(samples)}")
    print(f"current={dgsm.LAM_ALONG},{dgsm.LAM_SPARSE}")
    results = {}
    start = time.perf_counter()
    for along in args.along:
        for sparse in args.sparse:
            scores = [score({"dgsm": dgsm.dgsm_derain(s.y, along, sparse)}, s.x, s.kernel_shape)["dgsm"] for s in samples]
            psnr = float(np.mean([s["psnr"] for s in scores]))
            psnr_y = float(np.mean([s.get("psnr_y", s["psnr"]) for s in scores]))
            results[(along, sparse)] = psnr
            print(f"val_psnr_{along:g}_{sparse:g}={psnr:.3f}")
            print(f"val_psnr_y_{along:g}_{sparse:g}={psnr_y:.3f}")
    inputs = float(np.mean([score({"input": s.y}, s.x, s.kernel_shape)["input"]["psnr"] for s in samples]))
    print(f"val_psnr_input={inputs:.3f}")
    print(f"seconds_per_image={(time.perf_counter() - start) / max(len(samples) * len(results), 1):.3f}")
    best = max(results, key=results.get)
    print(f"best_val_psnr={results[best]:.3f}")
    print(f"best={best[0]:g},{best[1]:g}")


if __name__ == "__main__":
    main()
