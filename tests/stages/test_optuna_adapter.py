"""Optuna studies persist and resume: a killed search keeps its trials and never exceeds its budget."""
import optuna
import pytest

from stages.optuna_adapter import completed, open_study, run_study


class Killed(Exception):
    pass


def test_killed_search_resumes_keeps_trials_and_respects_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = []

    def objective(trial):
        x = trial.suggest_float("x", -3, 3)
        calls.append(x)
        if len(calls) == 4:
            raise Killed  # the process dies during the 4th trial
        return -(x - 1) ** 2

    with pytest.raises(Killed):
        run_study("s", storage, seed=0, budget=6, objective=objective)
    first = open_study("s", storage, seed=0)
    kept = [t.params["x"] for t in first.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(kept) == 3

    study = run_study("s", storage, seed=0, budget=6, objective=objective)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 6 and [t.params["x"] for t in done[:3]] == kept
    assert len(calls) == 4 + 3  # only what was left of the budget

    again = run_study("s", storage, seed=0, budget=6, objective=objective)
    assert completed(again) == 6 and len(calls) == 7  # a finished search recomputes nothing


def test_a_trial_left_running_by_a_dead_process_is_failed_not_counted(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study("t", storage, seed=0)
    study.ask()  # RUNNING forever: its process died
    study = run_study("t", storage, seed=0, budget=2, objective=lambda t: t.suggest_float("x", 0, 1))
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2


def test_initial_parameters_are_tried_first_and_count_in_the_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = run_study("u", storage, seed=0, budget=3, objective=lambda t: -abs(t.suggest_float("x", 0, 1) - 0.3),
                      initial=[{"x": 0.3}, {"x": 0.9}])
    trials = study.get_trials()
    assert len(trials) == 3 and [t.params["x"] for t in trials[:2]] == [0.3, 0.9]
    assert study.best_params == {"x": 0.3}
