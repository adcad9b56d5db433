"""Paired comparisons with confidence intervals: what a claim "a beats b" rests on.

Every method is scored on the same samples with the same training seeds, so two methods are
compared on their paired differences per (sample, seed). The interval is a two-sided Student-t
interval over those pairs (``scipy.stats``). The pairs of one sample across seeds are not
independent (the same image and draw), so with several seeds the interval is somewhat optimistic;
the report says so (:data:`CI_METHOD`). It also says nothing of how a gap moves from one trained
model to the next: two models of one seed can differ by an almost constant offset on every sample,
a narrow interval, while another seed (or the same seed on another CPU) flips its sign. So with
several seeds each comparison also carries the interval over seeds (:data:`CI_SEEDS_METHOD`):
the per-seed mean differences, the training seed the unit; with 3 seeds it is wide, as it should be.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from pipeline.io import InputError

CI_METHOD = "paired Student-t interval over (sample, seed) pairs"
CI_SEEDS_METHOD = "Student-t interval over the per-seed mean differences (seeds - 1 degrees of freedom)"


def sample_key(row: dict) -> str:
    """The sample a score row is of: its ``sample_id`` or, without one, ``<image>-<kernel_id>-<level>``
    (deblurring on the fly) or ``image`` (rain, haze pairs)."""
    if row.get("sample_id"):
        return str(row["sample_id"])
    if "kernel_id" in row:
        return f"{row['image']}-{row['kernel_id']}-{float(row['noise_level']):g}"
    return str(row["image"])


def paired_interval(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of paired differences and its two-sided Student-t interval
    (``n - 1`` degrees of freedom). One difference has no interval (``nan``); equal differences
    have a zero-width one."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise InputError("no paired differences to compare")
    mean = float(d.mean())
    if d.size == 1:
        return mean, math.nan, math.nan
    if np.ptp(d) == 0:
        return mean, mean, mean
    lo, hi = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
    return mean, float(lo), float(hi)


def _json_interval(lo: float, hi: float) -> list:
    """``[lo, hi]``, or ``[None, None]`` (JSON ``null``) where there is no interval: ``metrics.json`` refuses NaN."""
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else [None, None]


def _summary(diffs: list[float]) -> dict:
    """``{"diff_mean", "ci95": [lo, hi], "n"}``; a single difference has no interval, written
    ``[None, None]`` (JSON ``null``: ``metrics.json`` refuses NaN) and never a verdict."""
    mean, lo, hi = paired_interval(diffs)
    return {"diff_mean": mean, "ci95": _json_interval(lo, hi), "n": len(diffs)}


def _over_seeds(diffs: dict[tuple[str, int], float]) -> dict:
    """``{"per_seed": {seed: mean difference}, "ci95_seeds": [lo, hi]}`` of differences keyed by
    (sample, seed): the interval over the seeds' means, ``[None, None]`` for one seed."""
    seeds = sorted({seed for _, seed in diffs})
    means = {s: float(np.mean([d for (_, seed), d in diffs.items() if seed == s])) for s in seeds}
    _, lo, hi = paired_interval(list(means.values()))
    return {"per_seed": {str(s): m for s, m in means.items()}, "ci95_seeds": _json_interval(lo, hi)}


def comparisons(rows: Iterable[dict], pairs: Sequence[tuple[str, str]], metric: str = "psnr",
                levels: Sequence[float] = ()) -> list[dict]:
    """One entry per pair ``(a, b)`` whose methods both have rows: ``{"a", "b", "metric",
    "diff_mean", "ci95": [lo, hi], "n", "seeds", "significant", "winner", "per_seed",
    "ci95_seeds", "per_level"}`` over the differences ``a - b`` paired on (sample, seed);
    ``per_seed`` the mean difference of each training seed and ``ci95_seeds`` the interval over
    those means (``[None, None]`` with one seed); ``per_level`` (with ``levels``) ``{"diff_mean",
    "ci95", "n"}`` per noise level. ``significant`` and ``winner`` follow ``ci95`` (the issue's protocol).
    ``rows``: score rows with ``method``, ``seed``, ``metric`` and the columns of
    :func:`sample_key`. A sample of ``a`` without a partner in ``b`` is an error (the protocol
    scores every method on every sample)."""
    by_method: dict[str, dict[tuple[str, int], dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[(sample_key(r), int(r["seed"]))] = r
    out = []
    for a, b in pairs:
        ra, rb = by_method.get(a), by_method.get(b)
        if not ra or not rb:
            continue
        unpaired = sorted(set(ra) ^ set(rb))
        if unpaired:
            raise ValueError(f"{a} vs {b}: samples without a partner: {unpaired[:5]}")
        diffs = {k: ra[k][metric] - rb[k][metric] for k in sorted(ra)}  # the paired differences, once
        entry = {"a": a, "b": b, "metric": metric, **_summary(list(diffs.values())),
                 "seeds": sorted({seed for _, seed in diffs})}
        lo, hi = entry["ci95"]
        entry["significant"] = lo is not None and bool(lo > 0 or hi < 0)
        entry["winner"] = (a if lo > 0 else b) if entry["significant"] else None
        entry.update(_over_seeds(diffs))
        if levels:
            entry["per_level"] = {
                f"{level:g}": _summary([d for k, d in diffs.items() if abs(float(ra[k]["noise_level"]) - level) < 1e-9])
                for level in levels}
        out.append(entry)
    return out


def seed_spread(rows: Iterable[dict], methods: Sequence[str], metric: str = "psnr") -> dict[str, dict]:
    """Per method: the mean of ``metric`` per training seed (``per_seed``) and the sample std
    of those means over seeds (``std``, None with one seed)."""
    rows = list(rows)
    out = {}
    for m in methods:
        seeds = sorted({int(r["seed"]) for r in rows if r["method"] == m})
        per_seed = {str(s): float(np.mean([r[metric] for r in rows if r["method"] == m and int(r["seed"]) == s]))
                    for s in seeds}
        out[m] = {"per_seed": per_seed, "std": float(np.std(list(per_seed.values()), ddof=1)) if len(seeds) > 1 else None}
    return out
