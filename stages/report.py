"""DVC stage ``report``: one HTML page and its Markdown twin for every task of ``tasks.run``.

    python -m stages.report --params params.yaml --results results --models models --tuned tuned --out reports

Reads only what earlier stages wrote, per task: ``results/<task>/metrics.json`` (required),
``per_image.csv``, ``stages.csv``, ``guidance.csv``, ``visuals/*.npz``, ``models/<task>/seed-<S>/history.csv``
and ``train.json``, ``tuned/<task>/seed-<S>.yaml`` (each optional: a missing one empties its section and is named
on the page).
``--task T`` makes the report of that task alone. Several tasks: an overview table (the learned
method against the best other method, per task), then each task's sections. A rain or haze
task gets its own layout: the results table, training curves, the visual grid with the predicted rain density /
transmission correction against the true map, and the per-stage maps. Writes, as a
whole (the folder is replaced atomically), ``index.html`` (self-contained: inline CSS, figures
embedded as base64 PNG, opens offline), ``report.md`` and ``figures/*.png``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display needed

import pandas as pd  # noqa: E402

from pipeline import io  # noqa: E402
from pipeline.report.page import Report, ReportInputs, build_report, order_visuals, psnr_gap, render_html, \
    render_markdown  # noqa: E402
from stages.common import load_params, log, parser, run_main, seed_folder  # noqa: E402
from stages.tracking import stage_run  # noqa: E402


def _frame(path: Path, missing: list[str]) -> pd.DataFrame:
    if not path.exists():
        missing.append(str(path))
        return pd.DataFrame()
    return pd.DataFrame(io.read_csv(path))


def load_inputs(results: Path, models: Path, tuned: dict[int, Path] | None = None) -> ReportInputs:
    """Read every input of the report (``tuned``: training seed -> the tune stage's YAML). Raises
    InputError naming the file if ``metrics.json`` is missing or malformed, or if any input
    present is unreadable."""
    results, models = Path(results), Path(models)
    metrics_path = results / "metrics.json"
    metrics = io.read_json(metrics_path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        raise io.InputError(f"{metrics_path}: expected an object with a 'methods' mapping")
    missing: list[str] = []
    per_image = _frame(results / "per_image.csv", missing)
    stages = _frame(results / "stages.csv", missing)
    guidance = _frame(results / "guidance.csv", missing)
    history = _frame(models / "history.csv", missing)
    train: dict = {}
    if (models / "train.json").exists():
        loaded = io.read_json(models / "train.json")
        if not isinstance(loaded, dict):
            raise io.InputError(f"{models / 'train.json'}: expected a JSON object")
        train = loaded
    else:
        missing.append(str(models / "train.json"))
    real = load_npz_folder(results / "real")
    tuning = {}
    for seed, path in (tuned or {}).items():
        if not Path(path).exists():
            missing.append(str(path))
            continue
        loaded = io.read_yaml(path)
        if not isinstance(loaded, dict):
            raise io.InputError(f"{path}: expected a mapping (the tune stage's output)")
        tuning[seed] = loaded
    return ReportInputs(metrics, per_image, stages, guidance, history, train,
                        load_visuals(results / "visuals", per_image), missing=missing, real=real, tuning=tuning)


def load_npz_folder(folder: Path) -> list[dict]:
    """The arrays of every ``<sample_id>.npz`` in ``folder`` plus ``"sample_id"``, by name (none
    if the folder is absent; hidden in-flight temporaries skipped)."""
    if not folder.is_dir():
        return []
    return [{"sample_id": p.stem, **io.load_npz(p)}
            for p in sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))]


def load_visuals(folder: Path, per_image: pd.DataFrame) -> list[dict]:
    """Every ``<sample_id>.npz`` in ``folder`` (none if it is absent), ordered by noise level then id."""
    visuals = load_npz_folder(folder)
    for vis in visuals:
        if "ground_truth" not in vis:
            raise io.InputError(f"{folder / (vis['sample_id'] + '.npz')}: no 'ground_truth' array")
    return order_visuals(visuals, per_image)


def write_report(report: Report, out: Path) -> list[Path]:
    """Write ``index.html``, ``report.md`` and ``figures/<name>.png`` into ``out``; returns the paths."""
    out = Path(out)
    paths = []
    for fig in report.figures():
        path = out / "figures" / f"{fig.name}.png"
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(fig.png)
        paths.append(path)
    io.write_text(out / "report.md", render_markdown(report, "figures"))
    io.write_text(out / "index.html", render_html(report))
    return [*paths, out / "report.md", out / "index.html"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--results", default="results", help="the evaluate stages' output: <results>/<task>/")
    p.add_argument("--models", default="models",
                   help="the train stages' output: <models>/<task>/seed-<S>/ (the curves of the first seed of base.seeds)")
    p.add_argument("--tuned", default="tuned", help="the tune stages' output: <tuned>/<task>/seed-<S>.yaml "
                   "(the budget and what was kept, every seed of base.seeds)")
    p.add_argument("--out", default="reports", help="report folder (replaced as a whole)")
    args = p.parse_args()
    params = load_params(args.params, args.task)
    tasks = [args.task] if args.task else list(params.tasks.run)
    by_task = {t: load_params(args.params, t) for t in tasks}
    inputs = {t: load_inputs(Path(args.results) / t, seed_folder(Path(args.models) / t, params.base.seeds[0]),
                             {s: Path(args.tuned) / t / f"seed-{s}.yaml" for s in params.base.seeds})
              for t in tasks}
    for t, got in inputs.items():
        for path in got.missing:
            log.warning("report input not found, its section stays empty: %s", path)
        if got.metrics.get("task", "deblur") != t:
            raise io.InputError(f"{Path(args.results) / t / 'metrics.json'}: written for task "
                                f"{got.metrics.get('task', 'deblur')!r}, not {t!r}")
    report = build_report(inputs, {t: by_task[t].report for t in tasks}, params.report)
    with io.atomic_dir(args.out) as out:
        written = write_report(report, out)
    # one run per task, in that task's experiment, so each task's runs hold its whole chain
    for t in tasks:
        with stage_run("report", by_task[t], {"tasks": ",".join(tasks)}) as tracker:
            gap = psnr_gap(inputs[t].metrics)
            if gap is not None:
                tracker.log_metrics({"learned_minus_ircnn_estimated_psnr": gap})
            tracker.log_artifact(Path(args.out))
    log.info("report of %s: %d files in %s (open %s)", ", ".join(tasks), len(written), args.out,
             Path(args.out) / "index.html")


if __name__ == "__main__":
    run_main(main)
