"""DVC stage ``report``: an HTML page and its Markdown twin from the evaluation and training outputs.

    python -m stages.report --params params.yaml --results results --models models --out reports

Reads only what earlier stages wrote: ``results/metrics.json`` (required), ``per_image.csv``,
``stages.csv``, ``guidance.csv``, ``visuals/*.npz``, ``models/history.csv`` and ``models/train.json``
(each optional: a missing one empties its section and is named on the page). A rain or haze run (``metrics.json`` names its ``task``) gets its own
layout: the results table, training curves, the visual grid with the predicted rain density /
residual haze level against the true map, and the per-stage maps. Writes, as a
whole (the folder is replaced atomically), ``index.html`` (self-contained: inline CSS, figures
embedded as base64 PNG, opens offline), ``report.md`` and ``figures/*.png``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display needed

import pandas as pd  # noqa: E402

from pipeline import io  # noqa: E402
from pipeline.report import figures as figs  # noqa: E402
from pipeline.config import ReportConfig  # noqa: E402
from pipeline.report.page import Report, ReportInputs, compose, compose_task, psnr_gap, render_html, \
    render_markdown  # noqa: E402
from stages.common import load_params, log, parser, run_main  # noqa: E402
from stages.tracking import stage_run  # noqa: E402


def _frame(path: Path, missing: list[str]) -> pd.DataFrame:
    if not path.exists():
        missing.append(str(path))
        return pd.DataFrame()
    return pd.DataFrame(io.read_csv(path))


def load_inputs(results: Path, models: Path) -> ReportInputs:
    """Read every input of the report. Raises InputError naming the file if ``metrics.json`` is
    missing or malformed, or if any input present is unreadable."""
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
    return ReportInputs(metrics, per_image, stages, guidance, history, train,
                        load_visuals(results / "visuals", per_image), missing)


def load_visuals(folder: Path, per_image: pd.DataFrame) -> list[dict]:
    """Every ``<sample_id>.npz`` in ``folder`` (none if it is absent), ordered by noise level then id."""
    if not folder.is_dir():
        return []
    levels: dict[str, float] = {}
    if {"sample_id", "noise_level"}.issubset(per_image.columns):
        for sid, lvl in zip(per_image["sample_id"], pd.to_numeric(per_image["noise_level"], errors="coerce")):
            levels.setdefault(str(sid), float(lvl))
    visuals = []
    for path in sorted(p for p in folder.glob("*.npz") if not p.name.startswith(".")):
        arrays = io.load_npz(path)
        if "ground_truth" not in arrays:
            raise io.InputError(f"{path}: no 'ground_truth' array")
        vis = {"sample_id": path.stem, **arrays}
        if path.stem in levels:
            vis["noise_level"] = levels[path.stem]
        visuals.append(vis)
    return sorted(visuals, key=lambda v: (figs.sample_level(v), v["sample_id"]))


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
    p.add_argument("--results", default="results", help="the evaluate stage's output folder")
    p.add_argument("--models", default="models", help="the train stage's output folder")
    p.add_argument("--out", default="reports", help="report folder (replaced as a whole)")
    args = p.parse_args()
    params = load_params(args.params)
    inputs = load_inputs(Path(args.results), Path(args.models))
    for path in inputs.missing:
        log.warning("report input not found, its section stays empty: %s", path)
    with stage_run("report", params) as tracker:
        task = inputs.metrics.get("task", "deblur")
        if task == "deblur":
            report = compose(inputs, params.report.title, params.report.visual_methods)
        else:  # the default title names deblurring
            title = params.report.title if params.report.title != ReportConfig.title else \
                f"hyperguide: learned hyper-guidance for {task}"
            report = compose_task(inputs, title)
        with io.atomic_dir(args.out) as out:
            written = write_report(report, out)
        gap = psnr_gap(inputs.metrics)
        if gap is not None:
            tracker.log_metrics({"learned_minus_ircnn_estimated_psnr": gap})
        tracker.log_artifact(Path(args.out))
        log.info("report: %d files in %s (open %s)", len(written), args.out, Path(args.out) / "index.html")


if __name__ == "__main__":
    run_main(main)
