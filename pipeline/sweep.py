"""Ablation sweeps, the pure part: the sweep file as typed objects, its grid of trials, a trial's
validation score, the results table, the ranking and the summary (pandas), the figures
(matplotlib). No Ray, no MLflow: the ``sweep`` stage (``stages/sweep.py``) runs the trials
(``stages/sweep_trial.py``) and tracks them.

A sweep file::

    name: strategies
    seeds: [0, 1, 2]
    resources: {num_cpus: 1, num_gpus: 0.25}   # per trial: 4 trials share a GPU
    max_retries: 2                             # a trial whose worker dies is re-run this often
    overrides: {train: {steps: 200}}           # merged on params.yaml for every trial
    axes:
      strategy: [joint_low, joint_high, alternating, unrolled, implicit, none, oracle]
      model.proxy_output: [map, scalar]

Axes are dotted params keys (``model.stages``, ``train.inner_steps``...), a few short aliases
(:data:`ALIASES`), or ``strategy``, whose values are presets over several keys
(:data:`STRATEGY_PRESETS`). Every trial's params go through the same validation as
``params.yaml`` before anything starts: an unknown axis or a value out of range is a
:class:`SweepError` (a :class:`ConfigError`: exit code 2 at the stage's edge).
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.config import ConfigError, Params, flatten, merge, params_from_dict, pin_task, to_dict

if TYPE_CHECKING:
    import torch

    from pipeline.datasets import Sample

# the ablation axis of docs/method.md §4: each name sets the keys that make it that strategy
STRATEGY_PRESETS: dict[str, dict] = {
    "alternating": {"train": {"strategy": "alternating"}},
    "joint": {"train": {"strategy": "joint"}},
    "joint_low": {"train": {"strategy": "joint", "guidance_weight": 1.0}},
    "joint_high": {"train": {"strategy": "joint", "guidance_weight": 100.0}},
    "unrolled": {"train": {"strategy": "unrolled"}},
    "implicit": {"train": {"strategy": "implicit"}},
    "none": {"model": {"guidance": "none"}},  # no guidance: the nominal schedule into the same denoiser
    "estimated": {"model": {"guidance": "estimated"}},  # the classical per-image level in place of the proxy's map
    "oracle": {"model": {"guidance": "oracle"}},  # the true noise map: a bound, not a method
}
ALIASES: dict[str, str] = {
    "K": "model.stages", "stages": "model.stages", "width": "model.denoiser_width", "task": "base.task",
    "proxy_output": "model.proxy_output", "proxy_sharing": "model.proxy_sharing", "rho": "model.rho",
    "learn_rho": "model.learn_rho", "inner_steps": "train.inner_steps", "implicit_method": "train.implicit_method",
    "num_workers": "train.num_workers",
}
METRIC = "val_psnr"


class SweepError(ConfigError):
    """A sweep file that cannot be run: refused before any trial starts."""


@dataclass(frozen=True)
class Resources:
    """What one trial asks of the cluster (Ray resources): fractional GPUs pack trials per GPU."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        _check(self.num_cpus > 0, "resources.num_cpus", "must be > 0")
        _check(self.num_gpus >= 0, "resources.num_gpus", "must be >= 0")
        _check(self.num_gpus <= 1 or float(self.num_gpus).is_integer(), "resources.num_gpus",
               "above 1 must be a whole number (Ray packs fractions within one GPU only)")


@dataclass(frozen=True)
class Axis:
    name: str  # as written in the sweep file (an alias, a dotted key or ``strategy``)
    values: tuple


@dataclass(frozen=True)
class SweepSpec:
    name: str
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...] = (0,)
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 2
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One point of the grid: ``values`` per axis, a seed, and its validated params."""

    trial_id: str
    values: tuple[tuple[str, Any], ...]
    seed: int
    params: Params
    key: str  # changes whenever the trial's params (or the data fingerprint) change

    @property
    def label(self) -> str:
        """The configuration without the seed (what the ranking groups by)."""
        return ", ".join(f"{a}={_fmt(v)}" for a, v in self.values)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise SweepError(f"sweep {key}: {message}")


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def known_axes(base: Params | None = None) -> list[str]:
    """Every name an axis may take: ``strategy``, the aliases, every dotted params key."""
    return ["strategy", *ALIASES, *flatten(base or Params())]


def _nested(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def axis_override(axis: str, value: Any) -> dict:
    """The params override of one axis value (``strategy`` presets, aliases, dotted keys)."""
    if axis == "strategy":
        if value not in STRATEGY_PRESETS:
            close = difflib.get_close_matches(str(value), list(STRATEGY_PRESETS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(STRATEGY_PRESETS)}"
            raise SweepError(f"sweep axes.strategy: unknown strategy {value!r}{hint}")
        return STRATEGY_PRESETS[value]
    return _nested(ALIASES.get(axis, axis), value)


def parse_sweep(data: Any, base: dict) -> SweepSpec:
    """The sweep file's mapping -> :class:`SweepSpec`, every axis value checked against ``base``
    (the params mapping the trials start from)."""
    if not isinstance(data, dict):
        raise SweepError(f"sweep: expected a mapping, got {type(data).__name__}")
    allowed = ("name", "axes", "seeds", "resources", "max_retries", "overrides")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
            raise SweepError(f"sweep: unknown key '{key}'{hint}")
    name = data.get("name", "sweep")
    _check(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name or "") is not None, "name",
           "must be a non-empty name of letters, digits, '_', '.', '-'")
    seeds = data.get("seeds", [0])
    _check(isinstance(seeds, list) and len(seeds) > 0 and all(isinstance(s, int) and not isinstance(s, bool)
                                                                for s in seeds), "seeds", "must be a list of integers")
    _check(len(set(seeds)) == len(seeds), "seeds", "must not repeat")
    res = data.get("resources", {}) or {}
    _check(isinstance(res, dict) and set(res) <= {"num_cpus", "num_gpus"}, "resources",
           "a mapping with num_cpus and/or num_gpus")
    _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in res.values()), "resources",
           "values must be numbers")
    resources = Resources(**{k: float(v) for k, v in res.items()})
    retries = data.get("max_retries", 2)
    _check(isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries <= 20, "max_retries",
           "must be an integer in [0, 20]")
    overrides = data.get("overrides", {}) or {}
    _check(isinstance(overrides, dict), "overrides", "must be a mapping of params sections")
    start = pin_task(merge(base, overrides))  # a sweep explores one task
    try:
        params_from_dict(start)
    except ConfigError as exc:
        raise SweepError(f"sweep overrides: {exc}") from exc
    axes_raw = data.get("axes")
    _check(isinstance(axes_raw, dict) and len(axes_raw) > 0, "axes", "needs at least one axis with a list of values")
    names = known_axes(params_from_dict(start))
    axes = []
    for axis, values in axes_raw.items():
        if axis not in names:
            close = difflib.get_close_matches(str(axis), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SweepError(f"sweep axes: unknown axis '{axis}'{hint}")
        _check(isinstance(values, list) and len(values) > 0, f"axes.{axis}", "must be a non-empty list of values")
        for value in values:  # each value alone, so the message names it
            try:
                params_from_dict(merge(start, axis_override(axis, value)))
            except SweepError:
                raise
            except ConfigError as exc:
                raise SweepError(f"sweep axes.{axis}: value {_fmt(value)} refused: {exc}") from exc
        axes.append(Axis(axis, tuple(values)))
    return SweepSpec(name, tuple(axes), tuple(seeds), resources, retries, overrides)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")


def trial_key(params: Params, fingerprint: str = "") -> str:
    """A hash of the trial's full params and of the data it reads (``fingerprint``)."""
    src = json.dumps({"params": to_dict(params), "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def expand(spec: SweepSpec, base: dict, fingerprint: str = "") -> list[Trial]:
    """The grid: every combination of axis values, times every seed, each trial validated (so a
    combination that no single value reveals, e.g. ``num_workers`` with ``unrolled``, is refused
    here too)."""
    start = pin_task(merge(base, spec.overrides))
    trials = []
    for combo in itertools.product(*(a.values for a in spec.axes)):
        values = tuple((a.name, v) for a, v in zip(spec.axes, combo))
        for seed in spec.seeds:
            data = start
            for axis, value in values:
                data = merge(data, axis_override(axis, value))
            data = merge(data, {"base": {"seed": seed}})
            try:
                params = params_from_dict(data)
            except ConfigError as exc:
                label = ", ".join(f"{a}={_fmt(v)}" for a, v in values)
                raise SweepError(f"sweep: the combination {label} is refused: {exc}") from exc
            trial_id = _slug("__".join(f"{a.split('.')[-1]}={_fmt(v)}" for a, v in values) + f"__seed={seed}")
            trials.append(Trial(trial_id, values, seed, params, trial_key(params, fingerprint)))
    ids = [t.trial_id for t in trials]
    _check(len(set(ids)) == len(ids), "axes", "two trials share an id (repeated values?)")
    return trials


# -- a trial's score -------------------------------------------------------------------------
def evaluate_validation(model: "torch.nn.Module", samples: list["Sample"], device: "torch.device") -> tuple[dict, list[dict]]:
    """The trained (deblurring) model on every validation sample, scored by the evaluation
    protocol (:func:`pipeline.evaluation.evaluate_learned`): ``({"val_psnr": mean of per-level
    means, "val_psnr@LEVEL": .., "val_ssim": ..}, per-stage rows)``, a per-stage row being the
    mean over samples of ``stage, rho, guidance_mean_255`` and the stage's ``guidance_gain``."""
    import torch

    from pipeline.evaluation import evaluate_learned

    result = evaluate_learned(model.to(device).eval(), samples, device)
    learned = result.metrics["methods"]["learned"]
    metrics = {METRIC: learned["psnr_mean"], "val_ssim": learned["ssim_mean"],
               **{f"{METRIC}@{level}": v for level, v in learned["psnr"].items()}}
    per_stage = pd.DataFrame(result.stage_rows)[["stage", "rho", "guidance_mean_255"]].groupby("stage").mean()
    per_stage["guidance_gain"] = torch.exp(model.guidance_gain.detach().cpu()).numpy()[per_stage.index - 1]
    return metrics, per_stage.reset_index().to_dict("records")


# -- results ---------------------------------------------------------------------------------
def results_frame(records: list[dict], spec: SweepSpec) -> pd.DataFrame:
    """One row per trial (finished or failed): id, status, axes, seed, metrics, cost, error.

    ``records`` are the trials' result dicts (``trial_id``, ``status``, ``values``, ``seed``,
    ``metrics``: ``{"val_psnr": .., "val_psnr@3": .., ...}``, ``seconds``, ``attempts``, ``error``).
    """
    rows = []
    for r in records:
        row = {"trial_id": r["trial_id"], "status": r["status"], **dict(r["values"]), "seed": r["seed"],
               **r.get("metrics", {}), "train_seconds": r.get("seconds", float("nan")),
               "attempts": r.get("attempts", float("nan")), "resumed_from": r.get("resumed_from"),
               "error": r.get("error", "")}
        rows.append(row)
    frame = pd.DataFrame(rows)
    axes = [a.name for a in spec.axes]
    return frame.sort_values([*axes, "seed"], kind="stable").reset_index(drop=True) if len(frame) else frame


def noise_columns(frame: pd.DataFrame, metric: str = METRIC) -> list[tuple[float, str]]:
    """``[(level, column)]`` of the per-noise-level columns (``val_psnr@3``), by level."""
    cols = [(float(c.split("@", 1)[1]), c) for c in frame.columns if str(c).startswith(f"{metric}@")]
    return sorted(cols)


def rank(frame: pd.DataFrame, spec: SweepSpec, metric: str = METRIC) -> pd.DataFrame:
    """Configurations (every axis but the seed) ranked by the mean of ``metric`` over seeds.

    Columns: the axes, ``mean``, ``std`` (seed-to-seed), ``n`` (seeds), ``gap`` (best mean minus
    this one), ``gap_se`` (the standard error of that difference) and ``exceeds_spread``: whether
    the gap is more than twice its standard error (``None`` with a single seed: the spread is
    then unknown). Failed trials are left out of the means (the table lists them).
    """
    axes = [a.name for a in spec.axes]
    ok = frame[frame["status"] == "finished"] if len(frame) else frame
    if not len(ok) or metric not in ok:
        return pd.DataFrame(columns=[*axes, "mean", "std", "n", "gap", "gap_se", "exceeds_spread"])
    grouped = ok.groupby(axes, dropna=False, sort=False)[metric]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
    best = table.iloc[0]
    gaps, ses, verdicts = [], [], []
    for _, row in table.iterrows():
        gap = float(best["mean"] - row["mean"])
        if best["n"] < 2 or row["n"] < 2:
            se, verdict = float("nan"), None
        else:
            se = math.sqrt(best["std"] ** 2 / best["n"] + row["std"] ** 2 / row["n"])
            verdict = bool(gap > 2 * se) if gap > 0 else False
        gaps.append(gap)
        ses.append(se)
        verdicts.append(verdict)
    table["gap"], table["gap_se"], table["exceeds_spread"] = gaps, ses, verdicts
    return table


def ranking_text(ranking: pd.DataFrame, spec: SweepSpec, metric: str = METRIC) -> str:
    """A few sentences: the best configuration, and which gaps exceed the seed-to-seed spread."""
    if not len(ranking):
        return "No trial finished: nothing to rank."
    axes = [a.name for a in spec.axes]

    def name(row) -> str:
        return ", ".join(f"{a}={_fmt(row[a])}" for a in axes)

    best = ranking.iloc[0]
    lines = [f"Best on the validation split ({metric}, mean over {int(best['n'])} seed(s)): {name(best)} "
             f"at {best['mean']:.3f} dB."]
    for _, row in ranking.iloc[1:].iterrows():
        if row["exceeds_spread"] is None or (isinstance(row["exceeds_spread"], float) and math.isnan(row["exceeds_spread"])):
            verdict = "spread unknown (fewer than 2 seeds)"
        elif row["exceeds_spread"]:
            verdict = "exceeds the seed-to-seed spread (gap > 2 standard errors)"
        else:
            verdict = "within the seed-to-seed spread"
        lines.append(f"- {name(row)}: {row['mean']:.3f} dB, {row['gap']:.3f} dB below the best: {verdict}.")
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table (no dependency beyond pandas)."""
    if not len(frame.columns):
        return ""

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def summary_markdown(spec: SweepSpec, frame: pd.DataFrame, ranking: pd.DataFrame, text: str) -> str:
    """``summary.md``: the trial count, the ranking (sentences and table), the failures."""
    failed = frame[frame["status"] != "finished"] if len(frame) else frame
    failures = "".join(f"- {r.trial_id}: {r.error} (attempts: {r.attempts})\n" for r in failed.itertuples())
    return (f"# Sweep `{spec.name}`\n\n{len(frame)} trials, {len(failed)} failed.\n\n"
            f"## Ranking\n\n{text}\n\n{markdown_table(ranking)}\n" + (f"## Failures\n\n{failures}" if failures else ""))


def summary_record(spec: SweepSpec, frame: pd.DataFrame, ranking: pd.DataFrame) -> dict:
    """``summary.json``: the counts, the failed trials' ids, the ranking's rows."""
    failed = frame[frame["status"] != "finished"] if len(frame) else frame
    return {"sweep": spec.name, "n_trials": len(frame), "n_failed": len(failed),
            "failed": failed["trial_id"].tolist() if len(failed) else [],
            "ranking": json.loads(ranking.to_json(orient="records"))}


def winner_overrides(spec: SweepSpec, trials: list[Trial], ranking: pd.DataFrame) -> tuple[Trial, dict] | None:
    """The ranking's best configuration as ``params.yaml`` keys: ``(a trial of it, overrides)``,
    the overrides being the sweep's ``overrides`` and the winner's axis values, all under
    ``tasks.<task>`` (so the other tasks of the pipeline keep their settings). Merged into the
    ``params.yaml`` the sweep started from, they resolve for that task to the winner's params
    (the training seed aside: ``base.seeds`` stays the pipeline's). ``None`` with no ranking."""
    if not len(ranking):
        return None
    best = ranking.iloc[0]
    axes = [a.name for a in spec.axes]
    for t in trials:
        values = dict(t.values)
        if all(_fmt(values[a]) == _fmt(best[a].item() if hasattr(best[a], "item") else best[a]) for a in axes):
            over = dict(spec.overrides)
            for axis, value in t.values:
                over = merge(over, axis_override(axis, value))
            return t, {"tasks": {t.params.base.task: over}}
    raise SweepError(f"sweep {spec.name}: the ranking's best row matches no trial")


def best_yaml(spec: SweepSpec, trial: Trial, overrides: dict, ranking: pd.DataFrame) -> str:
    """``best.yaml``: the winner's overrides with a header saying what won, by how much, on what."""
    import yaml

    best = ranking.iloc[0]
    runner = (f"; the runner-up is {float(best['mean'] - ranking.iloc[1]['mean']):.3f} dB below"
              if len(ranking) > 1 else "")
    header = (f"# The winner of sweep '{spec.name}': {trial.label}\n"
              f"# validation PSNR {float(best['mean']):.3f} dB, mean over {int(best['n'])} seed(s){runner}.\n"
              f"# Apply: python -m stages.sweep --apply {spec.name}  (or python -m stages.apply <this file>), "
              f"then dvc repro.\n")
    return header + yaml.safe_dump(overrides, sort_keys=False)


def stage_table(records: list[dict]) -> pd.DataFrame:
    """The finished trials' per-stage rows, each labelled with its configuration (``config``):
    what :func:`stages_figure` draws."""
    return pd.DataFrame([{"config": ", ".join(str(v) for _, v in r["values"]), **s}
                         for r in records if r["status"] == "finished" for s in r.get("stages", [])])


# -- figures ---------------------------------------------------------------------------------
def _labels(frame: pd.DataFrame, spec: SweepSpec) -> pd.Series:
    axes = [a.name for a in spec.axes]
    return frame[axes].astype(str).agg(", ".join, axis=1) if len(frame) else pd.Series(dtype=str)


def psnr_by_noise_figure(frame: pd.DataFrame, spec: SweepSpec, metric: str = METRIC):
    """PSNR per configuration (strategy...) per noise level, error bars: std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ok = frame[frame["status"] == "finished"].copy() if len(frame) else frame
    cols = noise_columns(ok, metric) if len(ok) else []
    if not cols:
        ax.text(0.5, 0.5, "no finished trial", ha="center", va="center")
        return fig
    ok["config"] = _labels(ok, spec)
    levels = [lvl for lvl, _ in cols]
    for i, (label, group) in enumerate(ok.groupby("config", sort=False)):
        means = [group[c].mean() for _, c in cols]
        stds = [group[c].std() if len(group) > 1 else 0.0 for _, c in cols]
        ax.errorbar(np.array(levels) + 0.04 * (i - 1), means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel("noise level (% of range)")
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title("validation PSNR per noise level (error bars: std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def time_figure(frame: pd.DataFrame, spec: SweepSpec):
    """Training time per configuration, error bars: std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    ok = frame[frame["status"] == "finished"].copy() if len(frame) else frame
    if not len(ok):
        ax.text(0.5, 0.5, "no finished trial", ha="center", va="center")
        return fig
    ok["config"] = _labels(ok, spec)
    stats = ok.groupby("config", sort=False)["train_seconds"].agg(["mean", "std"]).fillna(0.0)
    ax.barh(stats.index, stats["mean"], xerr=stats["std"], capsize=3)
    ax.set_xlabel("training time (s)")
    ax.set_title("training time per configuration (std over seeds)")
    fig.tight_layout()
    return fig


def stages_figure(stage_rows: pd.DataFrame):
    """The learned per-stage ``rho_k`` and guidance gain ``exp(a_k)``, per configuration (mean over
    seeds and validation samples). ``stage_rows``: ``config, stage, rho, guidance_gain``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    if not len(stage_rows):
        axes[0].text(0.5, 0.5, "no finished trial", ha="center", va="center")
        return fig
    for label, group in stage_rows.groupby("config", sort=False):
        per = group.groupby("stage")[["rho", "guidance_gain"]].mean()
        axes[0].semilogy(per.index, per["rho"], marker="o", label=label)
        axes[1].plot(per.index, per["guidance_gain"], marker="o", label=label)
    axes[0].set_title("rho_k (mean over validation samples)")
    axes[1].set_title("guidance gain exp(a_k)")
    for ax in axes:
        ax.set_xlabel("stage k")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
