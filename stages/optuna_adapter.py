"""The one Optuna adapter: persistent, resumable, seeded studies with stable names.

A study lives in an RDB store (``tune.storage``: SQLite ``optuna.db`` in the project by default,
any SQLAlchemy URL otherwise), so an interrupted search resumes where it stopped:
``run_study`` counts the trials already COMPLETE and runs only what is left of the budget.
Trials left RUNNING by a killed process are marked FAIL first (they never count).
``optuna-dashboard sqlite:///optuna.db`` opens the studies.
"""
from __future__ import annotations

import logging
from typing import Callable

import optuna

log = logging.getLogger(__name__)


def open_study(name: str, storage: str, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize",
                               load_if_exists=True)


def completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def run_study(name: str, storage: str, seed: int, budget: int,
              objective: Callable[[optuna.Trial], float], initial: list[dict] | None = None) -> optuna.Study:
    """Run ``objective`` until the study holds ``budget`` complete trials (never more).

    ``initial``: parameter sets tried first in a new study (e.g. the hand-set rules, so the
    search starts from them and its best is never below them); they count in the budget.
    """
    study = open_study(name, storage, seed)
    if not study.trials:
        for params in (initial or [])[:budget]:
            study.enqueue_trial(params)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    done = completed(study)
    remaining = max(0, budget - done)
    log.info("study %s: %d trials complete, running %d more", name, done, remaining)
    if remaining:
        # The budget counts complete trials only: a trial killed half-way (or failed) is made
        # up by the next run, and a resumed search never exceeds the budget.
        study.optimize(objective, n_trials=remaining)
    return study
