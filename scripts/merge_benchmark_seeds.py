"""Merge benchmark runs made one training seed at a time into what one ``--seeds`` run writes.

    python scripts/merge_benchmark_seeds.py --out DIR RUN [RUN ...]

Each ``RUN`` is the output folder of ``python -m stages.benchmark ... --seeds S`` (or ``--model``)
on the same images, kernels, pairing, levels and methods, with other training seeds: run them on
separate machines, or each as soon as its seed's models exist. The merge is
``pipeline.evaluation.merge_seeds`` over the runs' ``per_image.csv`` rows, so ``DIR`` gets the
``metrics.json`` (means over samples x seeds, spread over seeds, ``comparisons`` paired on
(sample, seed)), ``per_image.csv`` and ``table.md`` that ``--seeds S1,S2,...`` writes for the same
samples (tested). The mismatch table is not merged (it is not in ``per_image.csv``: run the
parts with ``--no-mismatch``). Refused: runs that share a seed, score different samples or
methods, or lack their files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import io  # noqa: E402
from pipeline.evaluation import Evaluation, benchmark_tables, merge_seeds, row_sample  # noqa: E402

FLOAT_COLUMNS = ("noise_level", "psnr", "ssim", "psnr_y", "ssim_y")


def read_run(folder: Path) -> Evaluation:
    """One benchmark output folder as an :class:`Evaluation` of its rows (typed as the benchmark
    wrote them: scores and levels float, ``seed`` int)."""
    metrics = io.read_json(folder / "metrics.json")
    try:
        rows = [{k: (float(v) if k in FLOAT_COLUMNS else int(v) if k == "seed" else v) for k, v in r.items() if v != ""}
                for r in io.read_csv(folder / "per_image.csv")]
    except ValueError as exc:  # a score, level or seed cell that is not a number
        raise io.InputError(f"{folder / 'per_image.csv'}: {exc}") from exc
    if not rows:
        raise io.InputError(f"{folder / 'per_image.csv'}: no rows")
    task = metrics.get("task", "deblur")
    return Evaluation(task, tuple(metrics["methods"]), [float(v) for v in metrics["noise_levels"]], rows=rows)


def check_runs(runs: list[Evaluation], folders: list[Path]) -> None:
    """The runs must be of the same task, methods and samples, and of different seeds."""
    first, seen = runs[0], {}
    samples = {row_sample(r) for r in first.rows}
    for run, folder in zip(runs, folders):
        if (run.task, run.methods, run.levels) != (first.task, first.methods, first.levels):
            raise io.InputError(f"{folder}: task, methods or levels differ from {folders[0]}'s")
        if {row_sample(r) for r in run.rows} != samples:
            raise io.InputError(f"{folder}: scores other samples than {folders[0]}")
        for seed in {r["seed"] for r in run.rows}:
            if seed in seen:
                raise io.InputError(f"seed {seed} is in both {seen[seed]} and {folder}")
            seen[seed] = folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="benchmark output folders, one or more seeds each")
    p.add_argument("--out", required=True, type=Path, help="output folder (replaced atomically)")
    p.add_argument("--source", default="constant",
                   help="what table.md's title names: deblurring's --noise-mode, or the folder of pairs")
    args = p.parse_args(argv)
    try:
        runs = [read_run(folder) for folder in args.runs]
        check_runs(runs, args.runs)
    except (io.InputError, KeyError) as exc:
        p.exit(2, f"error: {exc}\n")
    result = merge_seeds(runs)
    summary, table, _ = benchmark_tables(result, args.source)
    with io.atomic_dir(args.out) as out:
        io.write_json(out / "metrics.json", result.metrics)
        io.write_csv(out / "per_image.csv", result.rows)
        io.write_text(out / "table.md", table)
        if summary:
            io.write_json(out / "summary.json", summary)
    print(f"merged {len(runs)} runs, seeds {result.metrics['seeds']}: {args.out}")


if __name__ == "__main__":
    main()
