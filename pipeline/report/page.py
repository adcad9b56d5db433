"""The report page: tables and text from the pipeline's outputs, rendered as HTML and Markdown.

:func:`compose` turns loaded inputs (:class:`ReportInputs`) into a :class:`Report`: an ordered
list of sections, each a list of blocks (paragraphs, tables, figures as PNG bytes).
:func:`render_html` makes one self-contained file of it (inline CSS, figures as base64
``data:`` URIs, no script, no link outside the file: it opens offline);
:func:`render_markdown` its twin, referencing the figures as files under ``figures/``.

Paragraphs and table cells use a tiny markup: ``**bold**`` and ```code```, nothing else.
"""
from __future__ import annotations

import base64
import html
import io as _io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import ReportConfig
from pipeline.report import BOUND_METHODS, HIGHLIGHT, best_rival, ordered_methods
from pipeline.report import figures as figs

DAGGER = "†"
BOUND_NOTE = (f"{DAGGER} Bound, not a competitor: driven by the true per-pixel noise map or searched against the "
              "ground truth per image, which a real method does not have; excluded when picking the best value of a row.")
BOLD_NOTE = ("Bold: the row's best PSNR, only where its paired difference to the runner-up has a 95 % interval "
             "that excludes 0 (the runner-up compared with `learned`; `comparisons` in metrics.json). SSIM is not "
             "tested, so never bold.")
MISSING = "–"
BASELINE = "ircnn_estimated"  # what the learned model's gains are measured against


# --------------------------------------------------------------------------- data model


@dataclass
class FigureBlock:
    name: str  # file stem: figures/<name>.png
    png: bytes
    caption: str = ""


@dataclass
class TableBlock:
    frame: pd.DataFrame  # cells are strings (tiny markup allowed); the index is the first column
    caption: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # column -> header shown
    notes: list[str] = field(default_factory=list)


Block = str | FigureBlock | TableBlock


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section]

    def figures(self) -> list[FigureBlock]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, FigureBlock)]


@dataclass
class ReportInputs:
    """Everything the report reads, already loaded. Frames hold the CSVs as read (strings fine)."""

    metrics: dict
    per_image: pd.DataFrame = field(default_factory=pd.DataFrame)
    stages: pd.DataFrame = field(default_factory=pd.DataFrame)
    guidance: pd.DataFrame = field(default_factory=pd.DataFrame)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    train: dict = field(default_factory=dict)
    visuals: list[dict] = field(default_factory=list)  # npz arrays + "sample_id"
    real: list[dict] = field(default_factory=list)  # rain / haze: real photos (npz arrays + "sample_id"), no truth
    missing: list[str] = field(default_factory=list)  # inputs that were not there
    tuning: dict = field(default_factory=dict)  # training seed -> the tune stage's YAML (tuned/<task>/seed-<S>.yaml)



def order_visuals(visuals: list[dict], per_image: pd.DataFrame) -> list[dict]:
    """``visuals`` (npz arrays + ``"sample_id"``), each given its ``noise_level`` from the
    per-image table where that has it, ordered by noise level then id."""
    levels: dict[str, float] = {}
    if {"sample_id", "noise_level"}.issubset(per_image.columns):
        for sid, lvl in zip(per_image["sample_id"], pd.to_numeric(per_image["noise_level"], errors="coerce")):
            levels.setdefault(str(sid), float(lvl))
    for vis in visuals:
        if vis["sample_id"] in levels:
            vis["noise_level"] = levels[vis["sample_id"]]
    return sorted(visuals, key=lambda v: (figs.sample_level(v), v["sample_id"]))


# --------------------------------------------------------------------------- figures -> bytes


def fig_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig``, without the "Software" text chunk (so equal figures give equal bytes)."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------- tables


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _best(values: Mapping[str, float | None], digits: int) -> set[str]:
    """Methods whose value, rounded as displayed, is the row's highest (bounds excluded; ties all win)."""
    shown = {m: round(v, digits) for m, v in values.items() if v is not None and m not in BOUND_METHODS}
    if not shown:
        return set()
    top = max(shown.values())
    return {m for m, v in shown.items() if v == top}


def significant_winner(metrics: Mapping, a: str, b: str, level: str | None = None) -> str | None:
    """The method of ``a``, ``b`` that ``metrics["comparisons"]`` shows better with a 95 % interval
    excluding 0 (overall, or at noise level ``level``), or None (no such comparison, or no verdict)."""
    for c in metrics.get("comparisons") or []:
        if {c.get("a"), c.get("b")} != {a, b}:
            continue
        entry = c if level is None else (c.get("per_level") or {}).get(level)
        lo, hi = (_finite(v) for v in ((entry or {}).get("ci95") or [None, None]))
        if lo is None or hi is None:
            return None
        return c["a"] if lo > 0 else c["b"] if hi < 0 else None
    return None


def _tested_best(metrics: Mapping, values: Mapping[str, float | None], level: str | None) -> set[str]:
    """The row's best PSNR method, if the paired comparison with the runner-up backs it (see
    :data:`BOLD_NOTE`); else nothing."""
    ranked = sorted(((v, m) for m, v in values.items() if v is not None and m not in BOUND_METHODS), reverse=True)
    if len(ranked) < 2:
        return set()
    best, runner_up = ranked[0][1], ranked[1][1]
    return {best} if significant_winner(metrics, best, runner_up, level) == best else set()


def _seed_spread(entry: Mapping, metric: str) -> str:
    std = _finite((entry or {}).get(f"{metric}_std_seeds"))
    return "" if std is None else f" ± {std:.2f}" if metric == "psnr" else f" ± {std:.3f}"


LUMA_ROW = "mean, Y (BT.601)"  # PSNR / SSIM on the luma, as the rain and haze literature reports them


def results_table(metrics: Mapping, bold: bool = True) -> pd.DataFrame:
    """The paper's table: noise levels (then ``mean``) as rows, methods as columns, cells ``"PSNR / SSIM"``.

    PSNR has 2 decimals, SSIM 3; a missing value shows as ``–``; with several seeds the ``mean``
    row adds ``± std`` over seeds. With ``bold``: when ``metrics`` has ``comparisons``, the row's
    best PSNR is bold only if backed by a significant paired comparison (:data:`BOLD_NOTE`); older
    files without them bold the best PSNR and the best SSIM of each row (bound methods excluded,
    ties all bold).
    The ``mean`` row uses the JSON's ``psnr_mean``/``ssim_mean`` (mean of the per-level means),
    or the mean of the row's values where those are absent. Colour tasks add :data:`LUMA_ROW`
    (``psnr_y_mean`` / ``ssim_y_mean``), never bold (the paired tests are on RGB PSNR).
    """
    psnr, ssim = figs.metric_frame(metrics, "psnr"), figs.metric_frame(metrics, "ssim")
    methods = ordered_methods([*psnr.columns, *ssim.columns])
    keys = sorted(set(psnr.attrs["keys"]) | set(ssim.attrs["keys"]), key=figs.level_of)
    entries = metrics.get("methods") or {}

    def value(frame: pd.DataFrame, key: str, m: str) -> float | None:
        if m not in frame or figs.level_of(key) not in frame.index:
            return None
        return _finite(frame.at[figs.level_of(key), m])

    rows: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    for key in keys:
        rows[key] = {m: (value(psnr, key, m), value(ssim, key, m)) for m in methods}
    mean: dict[str, tuple[float | None, float | None]] = {}
    for m in methods:
        pair = []
        for metric, frame in (("psnr", psnr), ("ssim", ssim)):
            v = _finite((entries.get(m) or {}).get(f"{metric}_mean"))
            if v is None and m in frame and frame[m].notna().any():
                v = float(frame[m].mean())
            pair.append(v)
        mean[m] = (pair[0], pair[1])
    rows["mean"] = mean
    if any(_finite((entries.get(m) or {}).get("psnr_y_mean")) is not None for m in methods):  # colour tasks
        rows[LUMA_ROW] = {m: (_finite((entries.get(m) or {}).get("psnr_y_mean")),
                              _finite((entries.get(m) or {}).get("ssim_y_mean"))) for m in methods}

    tested = "comparisons" in metrics
    cells: dict[str, list[str]] = {m: [] for m in methods}
    for key, values in rows.items():
        psnrs = {m: p for m, (p, _) in values.items()}
        if not bold or key == LUMA_ROW:
            best_p, best_s = set(), set()
        elif tested:
            best_p, best_s = _tested_best(metrics, psnrs, None if key == "mean" else key), set()
        else:
            best_p, best_s = _best(psnrs, 2), _best({m: s for m, (_, s) in values.items()}, 3)
        for m in methods:
            p, s = values[m]
            spread = (lambda metric: _seed_spread(entries.get(m), metric)) if key == "mean" else (lambda metric: "")
            p_txt = MISSING if p is None else _bold(f"{p:.2f}", m in best_p) + spread("psnr")
            s_txt = MISSING if s is None else _bold(f"{s:.3f}", m in best_s) + spread("ssim")
            cells[m].append(f"{p_txt} / {s_txt}")
    return pd.DataFrame(cells, index=pd.Index(list(rows), name="noise level (%)"), columns=methods)


def bound_labels(columns: Sequence[str]) -> dict[str, str]:
    """Column headers with a dagger on bound methods."""
    return {c: f"{c}{DAGGER}" if c in BOUND_METHODS else c for c in columns}


def psnr_gap(metrics: Mapping, a: str = HIGHLIGHT, b: str = BASELINE) -> float | None:
    """Mean PSNR of ``a`` minus that of ``b`` (dB), or None when either is missing."""
    methods = metrics.get("methods") or {}
    pa, pb = (_finite((methods.get(m) or {}).get("psnr_mean")) for m in (a, b))
    return None if pa is None or pb is None else pa - pb


def guidance_table(guidance: pd.DataFrame) -> pd.DataFrame:
    """Per noise level: the proxy's noise-map MAE and the classical scalar estimator's error (/255)."""
    g = guidance.copy()
    for c in ("noise_level", "mae_255", "estimated_sigma_255"):
        if c in g:
            g[c] = pd.to_numeric(g[c].replace("", np.nan), errors="coerce")
    if g.empty or "noise_level" not in g:
        return pd.DataFrame()
    rows = {}
    for level, part in g.groupby("noise_level"):
        row = {"true σ (/255)": f"{level * 2.55:.2f}"}
        if "mae_255" in part:
            row["proxy map MAE (/255)"] = f"{part['mae_255'].mean():.2f}"
        if "estimated_sigma_255" in part:
            err = (part["estimated_sigma_255"] - level * 2.55).abs().mean()
            row["classical |σ̂ − σ| (/255)"] = f"{err:.2f}"
            row["classical mean σ̂ (/255)"] = f"{part['estimated_sigma_255'].mean():.2f}"
        rows[f"{level:g}"] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("noise level (%)")


def stage_table(stages: pd.DataFrame) -> pd.DataFrame:
    """Per stage (rows): ``rho_k`` (one column, or one per level when it differs between levels) and the
    mean ± within-map std of the predicted guidance (/255) per noise level."""
    summary = figs.stage_summary(stages)
    if summary.empty:
        return pd.DataFrame()
    levels = sorted(summary.index.get_level_values("noise_level").unique())
    stage_ids = sorted(summary.index.get_level_values("stage").unique())
    out = pd.DataFrame(index=pd.Index([int(k) for k in stage_ids], name="stage k"))
    if "rho" in summary:
        rho = summary["rho"].unstack("noise_level")
        shared = figs.rho_shared(summary)
        if shared is not None:
            out["ρ_k"] = [_fmt(shared.get(k), ".4g") for k in stage_ids]
        else:
            for level in levels:
                out[f"ρ_k @ {level:g}%"] = [_fmt(rho.at[k, level], ".4g") for k in stage_ids]
    if "guidance_mean_255" in summary:
        for level in levels:
            part = summary.xs(level, level="noise_level")
            col = []
            for k in stage_ids:
                m = _finite(part["guidance_mean_255"].get(k))
                s = _finite(part["guidance_std_255"].get(k)) if "guidance_std_255" in part else None
                col.append(MISSING if m is None else f"{m:.2f}" + ("" if s is None else f" ± {s:.2f}"))
            out[f"guidance @ {level:g}% (/255)"] = col
    return out


def _fmt(v, spec: str) -> str:
    f = _finite(v)
    return MISSING if f is None else format(f, spec)


# --------------------------------------------------------------------------- text


def seeds_text(metrics: Mapping) -> str:
    """How many training seeds the numbers rest on, said plainly."""
    seeds = metrics.get("seeds")
    if not seeds:
        return "Training seeds: not recorded (an older results file)."
    if len(seeds) == 1:
        return (f"**1 seed** (seed {seeds[0]}): no spread over training seeds; the intervals below are over test "
                "samples only.")
    return (f"**{len(seeds)} seeds** ({', '.join(map(str, seeds))}): values are means over samples × seeds, "
            "`± std` the spread of the per-seed means. Each comparison's second interval is over the seeds' mean "
            "differences (the trained model the unit): where it crosses 0, the gap does not hold from one trained "
            "model to the next, whatever the first says.")


def comparison_table(metrics: Mapping) -> pd.DataFrame:
    """One row per paired comparison of ``metrics["comparisons"]``: the difference ``a − b`` in dB,
    its 95 % interval, the number of (sample, seed) pairs, with several seeds the interval over
    the seeds' mean differences, the verdict (from the first interval), and per noise level."""
    rows = {}
    several = len(metrics.get("seeds") or []) > 1  # an interval over seeds exists
    for c in metrics.get("comparisons") or []:
        lo, hi = (_finite(v) for v in c.get("ci95") or [None, None])
        slo, shi = (_finite(v) for v in c.get("ci95_seeds") or [None, None])
        verdict = significant_winner(metrics, c["a"], c["b"])
        levels = "; ".join(f"{k} %: {_fmt(v.get('diff_mean'), '+.2f')} [{_fmt((v.get('ci95') or [None])[0], '+.2f')}, "
                           f"{_fmt((v.get('ci95') or [None, None])[1], '+.2f')}]"
                           for k, v in (c.get("per_level") or {}).items())
        rows[f"`{c['a']}` − `{c['b']}`"] = {
            "diff (dB)": _fmt(c.get("diff_mean"), "+.2f"),
            "95 % interval": f"[{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]",
            "n": str(c.get("n", MISSING)),
            "seeds": ", ".join(map(str, c.get("seeds") or [])),
            **({"95 % interval over seeds": f"[{_fmt(slo, '+.2f')}, {_fmt(shi, '+.2f')}]"} if several else {}),
            "verdict": "no significant difference" if verdict is None else _bold(f"{verdict} better", True),
            **({"per noise level": levels} if levels else {}),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("pair")


def comparison_blocks(metrics: Mapping) -> list:
    """The seeds sentence and the paired-comparison table (or a sentence saying there is none)."""
    table = comparison_table(metrics)
    if table.empty:
        return [seeds_text(metrics), "No paired comparisons were computed for these results."]
    return [seeds_text(metrics), TableBlock(
        table, f"Paired differences in PSNR, {metrics.get('ci_method', 'paired interval')}; a verdict only where "
               "the 95 % interval excludes 0.")]


def _levels_text(metrics: Mapping) -> str:
    levels = metrics.get("noise_levels") or []
    return ", ".join(f"{float(l):g}" for l in levels) + " %" if levels else "unknown noise levels"


def run_summary(metrics: Mapping, train: Mapping) -> str:
    """The "what was run" paragraph."""
    n_img, n_ker = metrics.get("n_images", "?"), metrics.get("n_kernels", "?")
    methods = ordered_methods((metrics.get("methods") or {}).keys())
    text = (f"Evaluated on **{n_img}** test images × **{n_ker}** blur kernels at noise levels "
            f"{_levels_text(metrics)} of the dynamic range, {len(methods)} methods "
            f"({', '.join(f'`{m}`' for m in methods)}).")
    if train:
        parts = []
        secs = _finite(train.get("seconds"))
        if secs is not None:
            parts.append(f"training took **{secs:.0f} s** on `{train.get('device', '?')}`")
        n_par = train.get("n_parameters")
        if isinstance(n_par, (int, float)):
            parts.append(f"{int(n_par):,} parameters")
        if train.get("resumed_from_step") is not None:
            parts.append(f"resumed from step {train['resumed_from_step']}")
        vals = [f"{ph} {v:.2f} dB" for ph in ("pretrain", "bilevel")
                if (v := _finite(train.get(f"{ph}_val_psnr"))) is not None]
        if vals:
            parts.append("validation PSNR after " + ", after ".join(vals))
        if parts:
            joined = "; ".join(parts)
            text += " " + joined[0].upper() + joined[1:] + "."
    return text


def _search_text(name: str, entry: Mapping) -> str:
    """One tuned search: kept or not, on what validation PSNR, for how many trials and CPU-seconds."""
    cost = f"{entry.get('trials', '?')} trials, {_fmt(entry.get('cpu_seconds'), '.0f')} CPU-s"
    if entry.get("kept") == "rule":
        return (f"{name}: **the {entry.get('source', '?').upper()} rule** (the search found nothing better on "
                f"validation: {_fmt(entry.get('val_psnr'), '.2f')} dB; {cost})")
    if entry.get("kept") == "tuned":
        return (f"{name}: tuned, {_fmt(entry.get('val_psnr'), '.2f')} dB on validation vs the rule's "
                f"{_fmt(entry.get('rule_val_psnr'), '.2f')} ({cost})")
    return f"{name}: {_fmt(entry.get('val_psnr'), '.2f')} dB on validation ({cost})"


def tuning_summary(tuning: Mapping[int, Mapping]) -> list[str]:
    """Per training seed: the tuning budget against the learned model's training CPU-seconds, and
    which tuned schedules were kept over their starting rule (the tune stage's YAML)."""
    lines = []
    for seed, tuned in sorted(tuning.items()):
        budget = tuned.get("budget")
        if tuned.get("skipped") or not isinstance(budget, Mapping):
            continue
        searches = []
        if isinstance(tuned.get("global"), Mapping):
            searches.append(_search_text("`optuna_global`", tuned["global"]))
        for level, entry in (tuned.get("per_noise") or {}).items():
            searches.append(_search_text(f"`optuna_per_noise` at {level} %", entry))
        for name, entry in (tuned.get("classical") or {}).items():
            searches.append(_search_text(f"`{name}`", entry))
        lines.append(f"Tuning, seed {seed}: **{_fmt(budget.get('spent_cpu_seconds'), '.0f')} CPU-s spent** of a budget of "
                     f"**{_fmt(budget.get('cpu_seconds'), '.0f')} CPU-s**: {budget.get('source', '?')}; on the "
                     f"validation split. " + "; ".join(searches) + ".")
    return lines


def gap_summary(metrics: Mapping) -> str:
    """The learned-vs-baseline PSNR gap and the guidance error vs the classical estimator's."""
    gap = psnr_gap(metrics)
    if gap is None:
        text = f"Mean PSNR gap `{HIGHLIGHT}` − `{BASELINE}`: n/a (one of them was not evaluated)."
    else:
        text = f"Mean PSNR gap `{HIGHLIGHT}` − `{BASELINE}`: **{gap:+.2f} dB**."
    g, c = _finite(metrics.get("guidance_mae_255")), _finite(metrics.get("estimated_sigma_mae_255"))
    if g is not None or c is not None:
        g_txt = "n/a" if g is None else f"**{g:.2f}/255**"
        c_txt = "n/a" if c is None else f"**{c:.2f}/255**"
        text += (f" Noise-level error: the proxy's predicted per-pixel noise map has MAE {g_txt} against the true "
                 f"map; the classical scalar estimator (`skimage.restoration.estimate_sigma`, used by the "
                 f"`*_estimated` baselines) is off by {c_txt} on average.")
    return text


def gain_summary(per_image: pd.DataFrame, a: str = HIGHLIGHT, b: str = BASELINE) -> str:
    g = figs.paired_gain(per_image, a, b)
    if g.empty:
        return f"No per-image PSNR for both `{a}` and `{b}`."
    gains = g["gain"].to_numpy(dtype=float)
    return (f"Per test sample, PSNR(`{a}`) − PSNR(`{b}`): median {np.median(gains):+.2f} dB, "
            f"range {gains.min():+.2f} to {gains.max():+.2f} dB; `{a}` is better on "
            f"**{int((gains > 0).sum())} of {len(gains)}** samples.")


# --------------------------------------------------------------------------- composition


def compose(inputs: ReportInputs, title: str, visual_methods: Sequence[str]) -> Report:
    """All sections of the report, figures rendered to PNG."""
    m = inputs.metrics
    intro = [run_summary(m, inputs.train), *tuning_summary(inputs.tuning)]
    if inputs.missing:
        intro.append("Inputs not found (their sections are empty): " + ", ".join(f"`{p}`" for p in inputs.missing))
    sections = [Section("What was run", intro)]

    table = results_table(m)
    notes = ([BOUND_NOTE] if any(c in BOUND_METHODS for c in table.columns) else []) + \
        ([BOLD_NOTE] if "comparisons" in m else [])
    results = Section("Results", [
        TableBlock(table, "Mean PSNR (dB) / SSIM per noise level, every method that ran.",
                   bound_labels(table.columns), notes),
        gap_summary(m),
    ])
    gtab = guidance_table(inputs.guidance)
    if not gtab.empty:
        results.blocks.append(TableBlock(gtab, "Noise-level estimation error per noise level."))
    sections.append(results)
    sections.append(Section("Paired comparisons", comparison_blocks(m)))

    sections.append(Section("PSNR vs noise level", [
        FigureBlock("psnr_vs_noise", fig_to_png(figs.psnr_vs_noise(m)),
                    f"Mean PSNR per noise level; `{HIGHLIGHT}` thick, bounds dashed."),
    ]))
    sections.append(Section("Training", [
        FigureBlock("training_curves", fig_to_png(figs.training_curves(inputs.history)),
                    "Left: training losses (log scale); right: validation PSNR."),
    ]))

    visual = Section("Visual comparison")
    if inputs.visuals:
        present = {k.split("__", 1)[1] for v in inputs.visuals for k in v if k.startswith("method__")}
        shown = [x for x in visual_methods if x in present and x != "input"]
        absent = [x for x in visual_methods if x not in present]
        visual.blocks.append(FigureBlock(
            "visual_grid", fig_to_png(figs.visual_grid(inputs.visuals, shown)),
            "Per sample: input, restorations (PSNR against the ground truth, kernel border cropped), ground "
            "truth, and the proxy's predicted noise map next to the true one (same scale, /255). "
            "Second row: the outlined crop, enlarged."))
        if absent:
            visual.blocks.append("Not in the visual samples: " + ", ".join(f"`{x}`" for x in absent) + ".")
        first = inputs.visuals[0]
        if any(k.startswith("guidance__") for k in first):
            visual.blocks.append(FigureBlock(
                "guidance_maps", fig_to_png(figs.guidance_maps(first)),
                f"Predicted guidance map per stage for `{first.get('sample_id', '')}`."))
    else:
        visual.blocks.append("No visual samples in the results (`evaluate.n_visuals` is 0 or the folder is empty).")
    sections.append(visual)

    stage = Section("Per-stage penalty and guidance", [
        FigureBlock("stage_stats", fig_to_png(figs.stage_stats(inputs.stages)),
                    "Learned model per stage: penalty ρ_k and predicted guidance (mean ± within-map std), "
                    "averaged over the test samples of each noise level."),
    ])
    stab = stage_table(inputs.stages)
    if not stab.empty:
        stage.blocks.append(TableBlock(stab, "Per-stage ρ_k and guidance (/255), mean over test samples."))
    sections.append(stage)

    sections.append(Section(f"Per-image gain over {BASELINE}", [
        FigureBlock("gain_hist", fig_to_png(figs.gain_hist(inputs.per_image, HIGHLIGHT, BASELINE)),
                    f"Distribution of PSNR(`{HIGHLIGHT}`) − PSNR(`{BASELINE}`) over test samples."),
        gain_summary(inputs.per_image),
    ]))
    return Report(title, sections)


TASK_MAPS = {"derain": ("rain density", "the streak density"),
             "dehaze": ("transmission correction", "the correction log(t / t_dcp) of the dark channel prior's transmission "
                        "(its size is the residual degradation level of the classical start)")}
TASK_MAP_UNITS = {"dehaze": (1.0, "log")}  # the others are shown in /255
TASK_CLASSICAL = {"derain": "median filtering, `min(y, median_5(y))` (the rain models' start); `dgsm` is the "
                            "directional global sparse model (Deng et al. 2018), a published classical method",
                  "dehaze": "the dark channel prior with guided-filter refinement"}


def compose_task(inputs: ReportInputs, title: str) -> Report:
    """The report of a rain or haze run (``metrics["task"]``): the results table, the training
    curves, the visual grid with the proxy's predicted map against the true one, the per-stage maps."""
    m = inputs.metrics
    task = str(m.get("task"))
    map_name, map_text = TASK_MAPS.get(task, ("guidance", "the guidance map"))
    unit = TASK_MAP_UNITS.get(task, (255.0, "/255"))
    methods = ordered_methods((m.get("methods") or {}).keys())
    real = m.get("data") == "real pairs"
    intro = (f"Task **{task}**: evaluated on **{m.get('n_images', '?')}** test images "
             f"({'real pairs, trained on real pairs too' if real else 'synthetic'}), "
             f"{len(methods)} methods ({', '.join(f'`{x}`' for x in methods)}); `classical` is "
             f"{TASK_CLASSICAL.get(task, 'the classical baseline')}. The proxy predicts {map_text}; "
             + ("real pairs carry no true map, so it was trained by the **outer loss alone** (the reconstruction "
                "error, no inner supervision) and no guidance error is measured." if real else
                f"its mean absolute error against the true map: {_fmt(m.get('guidance_mae'), '.4f')}."))
    if inputs.train and (secs := _finite(inputs.train.get("seconds"))) is not None:
        intro += f" Training took **{secs:.0f} s** on `{inputs.train.get('device', '?')}`."
    sections = [Section("What was run", [intro] + (
        ["Inputs not found (their sections are empty): " + ", ".join(f"`{p}`" for p in inputs.missing)]
        if inputs.missing else []))]
    table = results_table(m).rename_axis("")
    sections.append(Section("Results", [TableBlock(table, "Mean PSNR (dB) / SSIM over the test samples, every method "
                                                          "that ran.", notes=[BOLD_NOTE] if "comparisons" in m else [])]))
    sections.append(Section("Paired comparisons", comparison_blocks(m)))
    sections.append(Section("Training", [
        FigureBlock("training_curves", fig_to_png(figs.training_curves(inputs.history)),
                    "Left: training losses (log scale); right: validation PSNR."),
    ]))
    visual = Section("Visual comparison")
    if inputs.visuals:
        shown = [x for x in ("classical", "dgsm", "no_guidance", "estimated_guidance", "direct_cnn", "learned")
                 if any(f"method__{x}" in v for v in inputs.visuals)]
        renamed = [{**v, **({"sigma_true": v["target_true"]} if "target_true" in v else {}),
                    **({"noise_estimate": v["target_estimate"]} if "target_estimate" in v else {})}
                   for v in inputs.visuals]
        maps = (f"the proxy's predicted {map_name} next to the true one (same scale, {unit[1]})"
                if any("target_true" in v for v in inputs.visuals) else
                f"the proxy's predicted {map_name} ({unit[1]}; real pairs carry no true one)")
        visual.blocks.append(FigureBlock(
            "visual_grid", fig_to_png(figs.visual_grid(renamed, shown, map_name=map_name, map_unit=unit)),
            f"Per sample: input, restorations (PSNR against the ground truth), ground truth, and {maps}. "
            "Second row: the outlined crop, enlarged."))
        if any(k.startswith("guidance__") for k in inputs.visuals[0]):
            visual.blocks.append(FigureBlock(
                "guidance_maps", fig_to_png(figs.guidance_maps(inputs.visuals[0])),
                f"The map fed to the denoiser per stage for `{inputs.visuals[0].get('sample_id', '')}`."))
    else:
        visual.blocks.append("No visual samples in the results (`evaluate.n_visuals` is 0 or the folder is empty).")
    sections.append(visual)
    if inputs.real:
        sections.append(Section("Real photos (no ground truth)", [
            f"{len(inputs.real)} real photos from `evaluate.real_folder`: no clean reference exists, so no score; "
            f"judge by eye, `classical` ({TASK_CLASSICAL.get(task, 'the classical baseline')}) next to `learned`.",
            FigureBlock("real_photos", fig_to_png(figs.real_grid(inputs.real, map_name, unit)),
                        f"Per photo: the input, the classical result, the learned result and the proxy's predicted "
                        f"{map_name} ({unit[1]})."),
        ]))
    return Report(title, sections)


TASK_NAMES = {"deblur": "Deblurring", "derain": "Rain removal", "dehaze": "Haze removal"}


def overview_table(metrics_by_task: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per task: mean PSNR / SSIM of ``learned``, the best competing method (bounds,
    ``oracle_per_image`` and ``input`` excluded) and the learned method's PSNR margin over it."""
    rows = {}
    for task, m in metrics_by_task.items():
        entries = m.get("methods") or {}
        mean = {k: (_finite((v or {}).get("psnr_mean")), _finite((v or {}).get("ssim_mean"))) for k, v in entries.items()}
        best = best_rival(m)
        own = mean.get(HIGHLIGHT, (None, None))
        margin = None if best is None or own[0] is None else own[0] - mean[best][0]
        rows[TASK_NAMES.get(task, task)] = {
            "test images": str(m.get("n_images", MISSING)),
            "input": _fmt(mean.get("input", (None,))[0], ".2f"),
            "learned": f"{_fmt(own[0], '.2f')} / {_fmt(own[1], '.3f')}",
            "best other method": MISSING if best is None else f"`{best}` {mean[best][0]:.2f} / {_fmt(mean[best][1], '.3f')}",
            "learned − best other (dB)": _bold(_fmt(margin, "+.2f"), best is not None and
                                               significant_winner(m, HIGHLIGHT, best) == HIGHLIGHT),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("task")


def combine(reports: Mapping[str, Report], metrics_by_task: Mapping[str, Mapping], title: str) -> Report:
    """One report of several tasks: an overview table, then each task's sections, titled by the
    task, with figure names prefixed by the task (``deblur_visual_grid``) so the files don't clash."""
    overview = Section("Overview", [
        "One `dvc repro` ran these tasks side by side (`tasks.run` in `params.yaml`). Mean PSNR (dB) / SSIM "
        "on each task's test split (synthetic unless the task's section says real pairs); the margin is over the "
        "best method that is neither a bound "
        "nor an oracle, bold only where its paired 95 % interval excludes 0.",
        TableBlock(overview_table(metrics_by_task), "Per task: the learned hyper-guidance against the best other method."),
    ])
    sections = [overview]
    for task, report in reports.items():
        name = TASK_NAMES.get(task, task)
        for section in report.sections:
            blocks = [FigureBlock(f"{task}_{b.name}", b.png, b.caption) if isinstance(b, FigureBlock) else b
                      for b in section.blocks]
            sections.append(Section(f"{name}: {section.title}", blocks))
    return Report(title, sections)



DEFAULT_TITLE = "hyperguide: learned hyper-guidance for deblurring, rain and haze removal"


def compose_one(inputs: ReportInputs, config: ReportConfig) -> Report:
    """The report of one task, in that task's layout (``config``: that task's report params)."""
    task = inputs.metrics.get("task", "deblur")
    if task == "deblur":
        return compose(inputs, config.title, config.visual_methods)
    title = config.title if config.title != ReportConfig.title else \
        f"hyperguide: learned hyper-guidance for {task}"  # the default title names deblurring
    return compose_task(inputs, title)


def build_report(inputs: Mapping[str, ReportInputs], configs: Mapping[str, ReportConfig],
                 config: ReportConfig) -> Report:
    """The report of every task of ``inputs`` (in their order), each in its own layout with its
    report params ``configs[task]``: one task's report as it is, several :func:`combine`d under
    ``config``'s title (its default replaced by one naming every task)."""
    reports = {t: compose_one(got, configs[t]) for t, got in inputs.items()}
    if len(reports) == 1:
        return next(iter(reports.values()))
    title = config.title if config.title != ReportConfig.title else DEFAULT_TITLE
    return combine(reports, {t: got.metrics for t, got in inputs.items()}, title)


# --------------------------------------------------------------------------- rendering


def _inline_html(text: str) -> str:
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(block: TableBlock) -> str:
    frame = block.frame
    head = [frame.index.name or "", *(block.labels.get(c, c) for c in frame.columns)]
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(frame.columns)) + "|"]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in [idx, *row.tolist()]) + " |")
    return "\n".join(lines)


def html_table(block: TableBlock) -> str:
    frame = block.frame
    head = "".join(f"<th>{_inline_html(h)}</th>" for h in
                   [frame.index.name or "", *(block.labels.get(c, c) for c in frame.columns)])
    body = []
    for idx, row in frame.iterrows():
        cells = f"<th>{_inline_html(idx)}</th>" + "".join(f"<td>{_inline_html(v)}</td>" for v in row.tolist())
        cls = ' class="mean"' if str(idx) == "mean" else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    caption = f"<caption>{_inline_html(block.caption)}</caption>" if block.caption else ""
    return f'<table>{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_markdown(report: Report, figure_dir: str = "figures") -> str:
    """Markdown twin of the page; figures are ``![caption](<figure_dir>/<name>.png)``."""
    out = [f"# {report.title}", ""]
    for section in report.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, FigureBlock):
                out += [f"![{block.name}]({figure_dir}/{block.name}.png)", ""]
                if block.caption:
                    out += [f"*{block.caption}*", ""]
            elif isinstance(block, TableBlock):
                if block.caption:
                    out += [f"*{block.caption}*", ""]
                out += [markdown_table(block), ""]
                out += [*(f"{n}" for n in block.notes), ""] if block.notes else []
            else:
                out += [str(block), ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #d62728; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .88em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; color: #555; padding-bottom: .4em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; white-space: nowrap; }
thead th { background: #f4f4f4; }
tbody th { text-align: left; background: #fafafa; }
tr.mean { border-top: 2px solid #999; }
td strong { color: #b00; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.note { font-size: .85em; color: #555; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
.scroll { overflow-x: auto; }
"""


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no script, no links."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(report.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{html.escape(report.title)}</h1>"]
    for section in report.sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, FigureBlock):
                data = base64.b64encode(block.png).decode("ascii")
                alt = html.escape(re.sub(r"[`*]", "", block.caption or block.name))
                cap = f"<figcaption>{_inline_html(block.caption)}</figcaption>" if block.caption else ""
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>')
            elif isinstance(block, TableBlock):
                parts.append(f'<div class="scroll">{html_table(block)}</div>')
                parts += [f'<p class="note">{_inline_html(n)}</p>' for n in block.notes]
            else:
                parts.append(f"<p>{_inline_html(block)}</p>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
