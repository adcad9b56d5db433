"""The report: figures (:mod:`.figures`) and the HTML/Markdown page (:mod:`.page`).

Everything here works on already-loaded data (dicts, pandas frames, numpy arrays); reading the
pipeline's outputs and writing ``reports/`` is the job of ``stages/report.py``.

This module holds what both halves share: the order methods are shown in, which methods are
bounds (oracles excluded from "best"), a fixed colour per method so every figure agrees, and
each task's headline (the few numbers DVC shows as metrics, written by ``evaluate``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# The paper's column order; methods not listed follow in the order they come.
METHOD_ORDER = (
    "input",
    "ircnn_blind",
    "ircnn_true",
    "ircnn_estimated",
    "dpir_blind",
    "dpir_true",
    "dpir_estimated",
    "true_sigma_map",
    "learned",
)
# Methods that see information a real method cannot (the true noise map, the ground truth of the
# image: the per-image oracles): shown, never "best".
BOUND_METHODS = frozenset({"true_sigma_map", "oracle_per_image", "oracle_per_image_ft"})
HIGHLIGHT = "learned"

_COLOURS = {
    "input": "#7f7f7f",
    "ircnn_blind": "#9ecae1",
    "ircnn_true": "#4292c6",
    "ircnn_estimated": "#08519c",
    "dpir_blind": "#a1d99b",
    "dpir_true": "#41ab5d",
    "dpir_estimated": "#006d2c",
    "true_sigma_map": "#756bb1",
    "learned": "#d62728",
}
_EXTRA_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000000")


def ordered_methods(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`METHOD_ORDER`, unknown ones after, in their given order (no duplicates)."""
    names = list(dict.fromkeys(names))
    known = [m for m in METHOD_ORDER if m in names]
    return known + [m for m in names if m not in METHOD_ORDER]


def method_colour(name: str) -> str:
    """A stable colour per method (unknown methods get one from a spare palette by name)."""
    if name in _COLOURS:
        return _COLOURS[name]
    return _EXTRA_COLOURS[sum(name.encode()) % len(_EXTRA_COLOURS)]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_rival(metrics: Mapping) -> str | None:
    """The best method by mean PSNR that is neither :data:`HIGHLIGHT`, the input nor a bound
    (controls and tuned baselines count: they are what the learned guidance must beat)."""
    means = {name: _number((entry or {}).get("psnr_mean")) for name, entry in (metrics.get("methods") or {}).items()}
    rivals = {k: v for k, v in means.items() if v is not None and k not in BOUND_METHODS | {HIGHLIGHT, "input"}}
    return max(rivals, key=lambda k: rivals[k]) if rivals else None


def headline(metrics: Mapping, task: str) -> dict:
    """A task's few numbers for ``dvc metrics show`` / ``dvc exp show``, under the task's name (so
    the columns read ``deblur.learned``, not the file's path): ``learned`` (mean PSNR), ``margin``
    over the best other method (:func:`best_rival`) with its paired 95 % interval ``ci_lo``,
    ``ci_hi`` (from ``metrics["comparisons"]``), that method's name ``vs`` and the proxy's
    ``guidance_err`` (deblurring: mean absolute error of the noise-level map, x255; rain and haze:
    of the density / correction map). ``None`` where the metrics hold no such number."""
    own = _number(((metrics.get("methods") or {}).get(HIGHLIGHT) or {}).get("psnr_mean"))
    rival = best_rival(metrics)
    margin = lo = hi = None
    for c in metrics.get("comparisons") or []:
        if rival is not None and (c.get("a"), c.get("b")) == (HIGHLIGHT, rival):
            margin = _number(c.get("diff_mean"))
            lo, hi = (_number(v) for v in (c.get("ci95") or [None, None]))
    err = next((v for v in (metrics.get("guidance_mae_255"), metrics.get("guidance_mae")) if v is not None), None)
    r = lambda v, d=3: None if v is None else round(v, d)  # noqa: E731 - short columns
    return {task: {"learned": r(own), "margin": r(margin), "ci_lo": r(lo), "ci_hi": r(hi), "vs": rival,
                   "guidance_err": r(_number(err))}}
