"""What the Optuna searches optimise: the one search space, the rule starts, and the objectives.

Pure functions of (parameters, samples, denoiser) -> PSNR; the search itself (Optuna, its
storage and study names) lives in the one adapter, ``stages/optuna_adapter.py``, which reads a
space as a tuple of :class:`Knob`. A tuned HQS schedule has the form
``sigma_k = logspace(s_start, s_end, K)``, ``rho_k = lam / sigma_k^2`` (docs/method.md §5.2),
searched over ``(lam, s_start, s_end, K)``: by the ``tune`` stage on the validation split and by
the benchmark's per-image oracle, in the same space.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from pipeline.baselines import classical
from pipeline.baselines.pnp import run_schedule
from pipeline.baselines.schedules import DPIR, IRCNN, SIGMA_START, Schedule, geometric
from pipeline.data import chw_to_hwc
from pipeline.datasets import Sample
from pipeline.generators.seeds import rng_for
from pipeline.metrics import kernel_crop, psnr
from pipeline.physics.blur import BlurPhysics

# Search ranges, [0, 1] units for the strengths.
LAM_RANGE = (1e-7, 1e-2)
S_START_RANGE = (5 / 255, 100 / 255)
S_END_RANGE = (0.5 / 255, 50 / 255)
MIN_ITERATIONS = 4


@dataclass(frozen=True)
class Knob:
    """One searched parameter in ``[low, high]``: log-uniform unless ``log`` is false, an integer
    when ``integer``."""

    name: str
    low: float
    high: float
    log: bool = True
    integer: bool = False


def schedule_space(max_iterations: int) -> tuple[Knob, ...]:
    """The searched schedule family ``(lam, s_start, s_end, iterations)``, ``K <= max_iterations``."""
    return (Knob("lam", *LAM_RANGE), Knob("s_start", *S_START_RANGE), Knob("s_end", *S_END_RANGE),
            Knob("iterations", MIN_ITERATIONS, max_iterations, log=False, integer=True))


def tuned_schedule(params: Mapping[str, float]) -> Schedule:
    """The schedule of ``params`` (``lam, s_start, s_end, iterations``; ``s_end`` capped at ``s_start``)."""
    s_start = params["s_start"]
    sigmas = geometric(s_start, min(params["s_end"], s_start), int(params["iterations"]))
    return Schedule(sigmas, params["lam"] / sigmas**2)


def rule_starts(level_percent: float, max_iterations: int) -> list[dict]:
    """The IRCNN and DPIR rules at a noise level, written in the searched family: the searches
    start from them, so a tuned schedule is never worse than the rules on the tuning samples.
    (DPIR's 8 iterations are kept even above a smaller ``max_iterations``: Optuna tries an
    enqueued value as given.)"""
    sigma = level_percent / 100.0
    return [{"lam": IRCNN.lam(sigma), "s_start": SIGMA_START, "s_end": sigma,
             "iterations": min(IRCNN.iterations, max_iterations)},
            {"lam": DPIR.lam(sigma), "s_start": SIGMA_START, "s_end": sigma, "iterations": DPIR.iterations}]


RULE_NAMES = ("ircnn", "dpir")  # the order of :func:`rule_starts`
# How the tuning budget is split: the blind global schedule, all per-level schedules together,
# all classical knobs together (each group shared equally among its searches).
BUDGET_SHARES = {"global": 1 / 3, "per_noise": 1 / 2, "classical": 1 / 6}


def budget_split(total_cpu_seconds: float, levels: Sequence[str], classical: Sequence[str]) -> dict[str, float]:
    """CPU-seconds per search (``global``, ``noise-<level>``, each classical method) from the
    total, by :data:`BUDGET_SHARES`; the shares sum to the total."""
    out = {"global": total_cpu_seconds * BUDGET_SHARES["global"]}
    out.update({f"noise-{lvl}": total_cpu_seconds * BUDGET_SHARES["per_noise"] / len(levels) for lvl in levels})
    out.update({m: total_cpu_seconds * BUDGET_SHARES["classical"] / len(classical) for m in classical})
    return out


def keep_or_rule(best_params: Mapping[str, float], best_value: float, starts: Sequence[dict],
                 start_values: Sequence[float]) -> dict:
    """The winner of a schedule search: the tuned schedule only if it beats every rule it started
    from on the same validation samples (``start_values``, in :data:`RULE_NAMES` order), else the
    best rule; ``kept`` says which (``tuned`` | ``rule``), ``source`` the rule kept, and
    ``rule_val_psnr`` the best rule's value."""
    rule = int(np.argmax(start_values)) if len(start_values) else None
    if rule is None or best_value > start_values[rule]:
        winner = {**best_params, "val_psnr": round(best_value, 4), "kept": "tuned"}
    else:
        winner = {**{k: starts[rule][k] for k in best_params}, "val_psnr": round(start_values[rule], 4),
                  "kept": "rule", "source": RULE_NAMES[rule]}
    if rule is not None:
        winner["rule_val_psnr"] = round(float(start_values[rule]), 4)
    return winner


def oracle_starts(tuned: Mapping | None, told_percent: Sequence[float], max_iterations: int) -> list[dict]:
    """What a per-image search queues first: the IRCNN and DPIR rules at every level a
    plug-and-play method was told on the sample (``told_percent``: nominal, true, estimated), then
    the tuned global schedule and every tuned per-level one, as points of the searched family
    (extra keys of ``tuned.yaml`` dropped); duplicates once, in that order."""
    keys = ("lam", "s_start", "s_end", "iterations")
    points = [p for level in told_percent for p in rule_starts(level, max_iterations)]
    if tuned:
        points += [tuned["global"], *tuned["per_noise"].values()]
    out: list[dict] = []
    for p in points:
        point = {k: p[k] for k in keys}
        if point not in out:
            out.append(point)
    return out


def subset(samples: list[Sample], n: int, seed: int, label: object) -> list[Sample]:
    """At most ``n`` of ``samples``, a seeded choice per ``label``, in their order."""
    if len(samples) <= n:
        return samples
    idx = rng_for(seed, "tune-subset", label).choice(len(samples), size=n, replace=False)
    return [samples[i] for i in sorted(idx)]


@dataclass(frozen=True)
class ScheduleSearch:
    """One schedule search: ``global`` (blind, every level) or ``noise-<level>`` (one level)."""

    name: str
    samples: list[Sample]
    initial: list[dict]


def schedule_searches(samples: list[Sample], max_samples: int, max_iterations: int, seed: int) -> list[ScheduleSearch]:
    """The global search (started from the rules at the median level) and one per noise level."""
    levels = sorted({s.noise_level for s in samples})
    jobs = [ScheduleSearch("global", subset(samples, max_samples, seed, "global"),
                           rule_starts(float(np.median(levels)), max_iterations))]
    for level in levels:
        group = [s for s in samples if s.noise_level == level]
        jobs.append(ScheduleSearch(f"noise-{level:g}", subset(group, max_samples, seed, level),
                                   rule_starts(level, max_iterations)))
    return jobs


def restore_with_schedule(sample: Sample, params: Mapping[str, float], denoiser: torch.nn.Module,
                          device: torch.device) -> np.ndarray:
    """``(C, H, W)``: plug-and-play HQS on ``sample`` with the schedule ``params``."""
    physics = BlurPhysics(torch.from_numpy(sample.y)[None].to(device), torch.from_numpy(sample.kernel))
    return run_schedule(physics, denoiser, tuned_schedule(params)).x[0].float().cpu().numpy()


def schedule_psnr(params: Mapping[str, float], samples: Sequence[Sample], denoiser: torch.nn.Module,
                  device: torch.device) -> list[float]:
    """PSNR of the schedule ``params`` on every sample, kernel border cropped."""
    return [psnr(chw_to_hwc(restore_with_schedule(s, params, denoiser, device)), chw_to_hwc(s.x),
                 kernel_crop(s.kernel.shape)) for s in samples]


def schedule_objective(samples: Sequence[Sample], denoiser: torch.nn.Module,
                       device: torch.device) -> Callable[[dict], float]:
    """``params -> mean PSNR over samples``: what the schedule searches maximise."""
    return lambda params: float(np.mean(schedule_psnr(params, samples, denoiser, device)))


CLASSICAL: dict[str, tuple[Callable, Knob]] = {
    # method: (function, its one knob)
    "wiener": (classical.wiener, Knob("balance", 1e-4, 1.0)),
    "richardson_lucy": (classical.richardson_lucy, Knob("num_iter", 2, 60, integer=True)),
    "tv": (classical.tv_deconvolution, Knob("lam", 1e-5, 1e-1)),
}


def deconvolve(method: str, y: np.ndarray, kernel: np.ndarray, value: float) -> np.ndarray:
    """``(C, H, W)``: the classical ``method`` on ``y`` with its knob at ``value``."""
    fn, knob = CLASSICAL[method]
    return fn(y, kernel, **{knob.name: int(round(value)) if knob.integer else float(value)})


def classical_psnr(method: str, value: float, samples: Sequence[Sample]) -> list[float]:
    """PSNR of a classical method with its knob at ``value`` on every sample."""
    return [psnr(chw_to_hwc(deconvolve(method, s.y, s.kernel, value)), chw_to_hwc(s.x), kernel_crop(s.kernel.shape))
            for s in samples]


def classical_objective(method: str, samples: Sequence[Sample]) -> Callable[[dict], float]:
    """``{knob: value} -> mean PSNR over samples``."""
    knob = CLASSICAL[method][1].name
    return lambda params: float(np.mean(classical_psnr(method, params[knob], samples)))


# The modules whose code defines what a trial scores: the schedule family and its plug-and-play
# solver, the classical methods, the blur operator, the metric. An edit to any is another objective.
OBJECTIVE_MODULES = ("pipeline.baselines.tuning", "pipeline.baselines.pnp", "pipeline.baselines.schedules",
                     "pipeline.baselines.classical", "pipeline.physics.blur", "pipeline.metrics")


def objective_code_version() -> str:
    """A hash of the source of :data:`OBJECTIVE_MODULES` (all imported by this module)."""
    digest = hashlib.sha256()
    for name in OBJECTIVE_MODULES:
        digest.update(Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()


def study_key(denoiser_sha256: str, data_sha256: str, settings: Mapping[str, object], code: str | None = None) -> str:
    """The part of a study's name that changes whenever its objective or search space does: the
    denoiser (its file's hash), the validation data (``samples.csv``'s hash), the ``settings`` that
    shape the space or pick the samples (``max_iterations``, ``max_samples``, the seed) and the
    objective's code (:func:`objective_code_version`). A trial budget is no part of it: raising one
    resumes the same study. A persistent study under an unchanged key is therefore reused with
    reason, and any change starts a new one instead of silently returning old winners."""
    source = json.dumps({"denoiser": denoiser_sha256, "data": data_sha256, "settings": dict(settings),
                         "code": code if code is not None else objective_code_version()}, sort_keys=True)
    return hashlib.sha256(source.encode()).hexdigest()[:12]
