"""Optuna searches persist and resume: a killed search keeps its trials and never exceeds its budget;
the space is the library's Knob tuple, the objective sees plain dicts."""
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from conftest import ROOT, project_env
from pipeline.baselines.tuning import Knob, schedule_space
from stages.optuna_adapter import open_study, search

X = (Knob("x", -3.0, 3.0, log=False),)


def states(storage: str, name: str) -> list:
    return [t.state for t in optuna.load_study(study_name=name, storage=storage).get_trials()]


class Killed(Exception):
    pass


def test_killed_search_resumes_keeps_trials_and_respects_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = []

    def objective(params: dict) -> float:
        calls.append(params["x"])
        if len(calls) == 4:
            raise Killed  # the process dies during the 4th trial
        return -(params["x"] - 1) ** 2

    with pytest.raises(Killed):
        search("s", X, objective, budget=6, seed=0, storage=storage)
    first = open_study("s", storage, seed=0)
    kept = [t.params["x"] for t in first.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(kept) == 3

    found = search("s", X, objective, budget=6, seed=0, storage=storage)
    done = open_study("s", storage, seed=0).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 6 and [t.params["x"] for t in done[:3]] == kept
    assert len(calls) == 4 + 3  # only what was left of the budget
    assert found.study == "s" and found.best_value == max(t.value for t in done)

    search("s", X, objective, budget=6, seed=0, storage=storage)
    assert len(calls) == 7  # a finished search recomputes nothing


def test_a_trial_left_running_by_a_dead_process_is_failed_not_counted(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # another process opens a trial and dies without a word (no exception handler runs)
    script = textwrap.dedent(f"""
        import os
        from stages.optuna_adapter import open_study
        open_study("t", {storage!r}, seed=0).ask()
        os._exit(9)
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=project_env(ROOT), capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    assert states(storage, "t") == [optuna.trial.TrialState.RUNNING]
    search("t", X, lambda p: p["x"], budget=2, seed=0, storage=storage)
    after = states(storage, "t")
    assert after.count(optuna.trial.TrialState.FAIL) == 1 and after.count(optuna.trial.TrialState.COMPLETE) == 2


def test_initial_points_are_tried_first_and_count_in_the_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    found = search("u", (Knob("x", 0.0, 1.0, log=False),), lambda p: -abs(p["x"] - 0.3), budget=3, seed=0,
                   storage=storage, initial=[{"x": 0.3, "ignored": 1}, {"x": 0.9}])
    trials = open_study("u", storage, seed=0).get_trials()
    assert len(trials) == 3 and [t.params["x"] for t in trials[:2]] == [0.3, 0.9]
    assert found.best_params == {"x": 0.3}


def test_an_in_memory_search_is_seeded_and_draws_in_the_space():
    space = schedule_space(max_iterations=6)
    seen = []

    def objective(params: dict) -> float:
        seen.append(params)
        return -params["lam"]

    a = search(None, space, objective, budget=5, seed=3)
    b = search(None, space, lambda p: -p["lam"], budget=5, seed=3)
    assert a.study is None and a.best_params == b.best_params  # same seed, same draws
    for p in seen:
        assert set(p) == {"lam", "s_start", "s_end", "iterations"} and isinstance(p["iterations"], int)
        assert all(k.low <= p[k.name] <= k.high for k in space)


def burn(params: dict) -> float:
    """A real objective that spends CPU: more for larger x."""
    t0 = time.process_time()
    while time.process_time() - t0 < 0.02 + 0.03 * params["x"]:
        sum(i * i for i in range(2000))
    return -abs(params["x"] - 0.3)


def trial_seconds(storage: str, name: str) -> list[float]:
    """Each complete trial's recorded CPU-seconds, in trial order."""
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [t.user_attrs["cpu_seconds"] for t in sorted(trials, key=lambda t: t.number)]


def within_one_trial(storage: str, name: str, budget: float) -> bool:
    """The budget was reached, and was still open before the last trial (so overrun by that trial at most).

    Trials are charged what they cost, the sampler's own suggestion time included, so the bound
    is read off the last trial rather than off the objective.
    """
    seconds = trial_seconds(storage, name)
    return sum(seconds) >= budget and sum(seconds[:-1]) < budget


def test_a_cpu_budget_is_respected_within_one_trial_and_counts_across_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    space = (Knob("x", 0.0, 1.0, log=False),)
    first = search("cpu", space, burn, 1000, 0, storage, initial=[{"x": 0.9}], cpu_seconds=0.5)
    assert first.trials >= 2 and within_one_trial(storage, "cpu", 0.5)
    assert first.cpu_seconds == pytest.approx(sum(trial_seconds(storage, "cpu")))
    assert len(first.initial_values) == 1 and first.initial_values[0] == pytest.approx(-0.6)
    again = search("cpu", space, burn, 1000, 0, storage, initial=[{"x": 0.9}], cpu_seconds=0.5)
    assert again.trials == first.trials  # spent already: a re-run adds nothing
    more = search("cpu", space, burn, 1000, 0, storage, initial=[{"x": 0.9}], cpu_seconds=1.0)
    assert more.trials > first.trials and within_one_trial(storage, "cpu", 1.0)
    capped = search("cap", space, burn, 3, 0, storage, cpu_seconds=100.0)
    assert capped.trials == 3  # the trial cap still holds
    rules_first = search("rules", space, burn, 10, 0, storage, initial=[{"x": 0.5}, {"x": 0.6}], cpu_seconds=0.0)
    assert rules_first.trials == 2  # the starting points always run, even past the budget
