"""The one Optuna adapter: seeded TPE searches over a :class:`~pipeline.baselines.tuning.Knob`
space, persistent and resumable when given a storage. Nothing else imports ``optuna``; callers
pass an objective of plain ``{name: value}`` dicts and get a :class:`SearchResult` back.

A persistent study lives in an RDB store (``tune.storage``: SQLite ``optuna.db`` in the project
by default, any SQLAlchemy URL otherwise), so an interrupted search resumes where it stopped:
:func:`search` counts the trials already COMPLETE (and the CPU-seconds they spent, recorded per
trial as the user attribute ``cpu_seconds``) and runs only what is left of the budget. Trials left
RUNNING by a killed process are marked FAIL first (they never count).
``optuna-dashboard sqlite:///optuna.db`` opens the studies.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import optuna

from pipeline.baselines.tuning import Knob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """The best trial of a search: ``study`` is its name (``None`` in memory); ``trials`` the
    complete trials, ``cpu_seconds`` the process CPU-seconds they spent (every run of the study),
    ``initial_values`` the values of the ``initial`` points, in their order."""

    study: str | None
    best_params: dict
    best_value: float
    trials: int = 0
    cpu_seconds: float = 0.0
    initial_values: list[float] = field(default_factory=list)


def open_study(name: str | None, storage: str | None, seed: int) -> optuna.Study:
    """The study ``name`` in ``storage`` (created or loaded; in memory without a storage)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize",
                               load_if_exists=True)


def suggest(trial: optuna.Trial, space: Sequence[Knob]) -> dict:
    """One point of ``space`` drawn by ``trial`` (enqueued values come back as given)."""
    return {k.name: trial.suggest_int(k.name, int(k.low), int(k.high), log=k.log) if k.integer
            else trial.suggest_float(k.name, k.low, k.high, log=k.log) for k in space}


def completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def cpu_spent(study: optuna.Study) -> float:
    """The process CPU-seconds the study's complete trials spent (their ``cpu_seconds`` attribute)."""
    return float(sum(t.user_attrs.get("cpu_seconds", 0.0)
                     for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))))


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark FAIL the trials a killed process left RUNNING (one process searches a study at a time)."""
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def search(name: str | None, space: Sequence[Knob], objective: Callable[[dict], float], budget: int, seed: int,
           storage: str | None = None, initial: Sequence[dict] = (), cpu_seconds: float | None = None) -> SearchResult:
    """Maximise ``objective`` over ``space`` until the study holds ``budget`` complete trials (never
    more) or, with ``cpu_seconds``, until its complete trials have spent that many process
    CPU-seconds (``time.process_time``: every thread of this process), whichever comes first.

    ``initial``: points tried first in a new study (e.g. the hand-set rules, so the search starts
    from them and its best is never below them); they count in the budget and always run, even
    past the CPU budget. A CPU budget is checked between trials, so it is overrun by at most one
    trial. Without a ``storage`` the study lives in memory (the benchmark's per-image oracle).
    """
    study = open_study(name, storage, seed)
    n_initial = min(len(initial), budget)
    if not study.trials:
        for params in list(initial)[:budget]:
            study.enqueue_trial({k.name: params[k.name] for k in space})
    fail_stale_trials(study)

    def timed(trial: optuna.Trial) -> float:
        t0 = time.process_time()
        value = objective(suggest(trial, space))
        trial.set_user_attr("cpu_seconds", time.process_time() - t0)
        return value

    def more() -> bool:
        done = completed(study)
        return done < budget and (cpu_seconds is None or done < n_initial or cpu_spent(study) < cpu_seconds)

    done = completed(study)
    (log.info if storage else log.debug)("study %s: %d trials complete (%.1f CPU-s), budget %d trials%s", name, done,
                                         cpu_spent(study), budget,
                                         f" / {cpu_seconds:.1f} CPU-s" if cpu_seconds is not None else "")
    # The budget counts complete trials only: a trial killed half-way (or failed) is made up by
    # the next run, and a resumed search never exceeds the budget.
    while more():
        study.optimize(timed, n_trials=1)
    trials = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    return SearchResult(study.study_name if storage else None, study.best_params, study.best_value, len(trials),
                        cpu_spent(study), [t.value for t in trials[:n_initial]])
