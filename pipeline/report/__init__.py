"""The report: figures (:mod:`.figures`) and the HTML/Markdown page (:mod:`.page`).

Everything here works on already-loaded data (dicts, pandas frames, numpy arrays); reading the
pipeline's outputs and writing ``reports/`` is the job of ``stages/report.py``.

This module holds what both halves share: the order methods are shown in, which methods are
bounds (oracles excluded from "best"), and a fixed colour per method so every figure agrees.
"""
from __future__ import annotations

from collections.abc import Iterable

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
