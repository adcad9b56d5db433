"""The sweep library: the file refused before anything starts, the grid, the table, the ranking."""
import io as _io

import numpy as np
import pandas as pd
import pytest

from conftest import profile_dict
from pipeline.config import ConfigError
from pipeline.sweep import (SweepError, best_yaml, expand, markdown_table, parse_sweep, psnr_by_noise_figure, rank,
                            ranking_text, results_frame, stages_figure, time_figure, winner_overrides)

SPEC = {"name": "t", "seeds": [0, 1], "resources": {"num_cpus": 1, "num_gpus": 0.25},
        "axes": {"strategy": ["alternating", "unrolled", "none"], "K": [2, 3]}}


def test_a_valid_file_expands_into_validated_trials():
    base = profile_dict()
    spec = parse_sweep(SPEC, base)
    assert spec.resources.num_gpus == 0.25 and spec.max_retries == 2
    trials = expand(spec, base)
    assert len(trials) == 3 * 2 * 2 and len({t.trial_id for t in trials}) == 12
    by_id = {t.trial_id: t for t in trials}
    t = by_id["strategy=unrolled__K=3__seed=1"]
    assert (t.params.train.strategy, t.params.model.stages, t.params.base.seed) == ("unrolled", 3, 1)
    assert by_id["strategy=none__K=2__seed=0"].params.model.guidance == "none"
    # the key follows the params and the data
    assert expand(spec, base, "other data")[0].key != trials[0].key
    assert expand(spec, base)[0].key == trials[0].key


@pytest.mark.parametrize("change,message", [
    ({"axes": {"model.stagse": [2]}}, "unknown axis 'model.stagse'; did you mean 'model.stages'"),
    ({"axes": {"K": [2, 0]}}, "axes.K: value 0 refused: model.stages: must be in [1, 50]"),
    ({"axes": {"strategy": ["unroled"]}}, "did you mean 'unrolled'"),
    ({"axes": {"train.lr": [-1.0]}}, "train.lr"),
    ({"axes": {"task": ["snow"]}}, "base.task"),
    ({"seeds": [0, 0]}, "seeds: must not repeat"),
    ({"resources": {"num_gpus": 1.5}}, "whole number"),
    ({"resources": {"num_cpu": 1}}, "resources"),
    ({"axess": {}}, "did you mean 'axes'"),
    ({"overrides": {"train": {"stpes": 3}}}, "did you mean 'steps'"),
])
def test_unknown_axes_and_out_of_range_values_are_refused(change, message):
    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        spec = parse_sweep({**SPEC, **change}, profile_dict())
        expand(spec, profile_dict())
    assert issubclass(SweepError, ConfigError)  # exit code 2 at the stage's edge


def test_a_combination_no_single_value_reveals_is_refused_too():
    spec = parse_sweep({"axes": {"strategy": ["unrolled"], "num_workers": [2]}}, profile_dict())
    with pytest.raises(SweepError, match="combination strategy=unrolled, num_workers=2"):
        expand(spec, profile_dict())


def _records(spread: float, gap: float) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for strategy, mean in (("a", 25.0), ("b", 25.0 - gap)):
        for seed in range(4):
            v = mean + spread * rng.standard_normal()
            out.append({"trial_id": f"{strategy}{seed}", "status": "finished", "values": [["strategy", strategy]],
                        "seed": seed, "metrics": {"val_psnr": v, "val_psnr@1": v + 1, "val_psnr@5": v - 1},
                        "seconds": 1.0 + seed, "attempts": 1,
                        "stages": [{"stage": 1, "rho": 0.01, "guidance_gain": 1.0}]})
    out.append({"trial_id": "c0", "status": "failed", "values": [["strategy", "c"]], "seed": 0, "metrics": {},
                "attempts": 3, "error": "WorkerCrashedError: boom"})
    return out


@pytest.mark.parametrize("spread,gap,exceeds", [(0.01, 1.0, True), (1.0, 0.1, False)])
def test_ranking_says_whether_gaps_exceed_the_seed_spread(spread, gap, exceeds):
    spec = parse_sweep({"seeds": [0, 1, 2, 3], "axes": {"strategy": ["alternating"]}}, profile_dict())
    frame = results_frame(_records(spread, gap), spec)
    assert list(frame["status"]).count("failed") == 1  # failures stay in the table
    ranking = rank(frame, spec)
    assert list(ranking["n"]) == [4, 4] and "c" not in set(ranking["strategy"])
    second = ranking.iloc[1]
    assert bool(second["exceeds_spread"]) is exceeds
    text = ranking_text(ranking, spec)
    assert ("exceeds the seed-to-seed spread" in text) is exceeds
    md = markdown_table(frame)
    assert md.count("\n") == len(frame) + 2 and "| failed |" in md


def test_a_single_seed_leaves_the_spread_unknown():
    spec = parse_sweep({"axes": {"strategy": ["alternating"]}}, profile_dict())
    recs = [r for r in _records(0.1, 1.0) if r["seed"] == 0]
    assert "spread unknown" in ranking_text(rank(results_frame(recs, spec), spec), spec)


def test_figures_render():
    spec = parse_sweep({"seeds": [0, 1, 2, 3], "axes": {"strategy": ["alternating"]}}, profile_dict())
    recs = _records(0.1, 1.0)
    frame = results_frame(recs, spec)
    stages = pd.DataFrame([{"config": r["values"][0][1], **s} for r in recs for s in r.get("stages", [])])
    for fig in (psnr_by_noise_figure(frame, spec), time_figure(frame, spec), stages_figure(stages)):
        buf = _io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:4] == b"\x89PNG"


def test_the_winner_as_params_resolves_to_the_winning_trials_config_and_leaves_other_tasks_alone():
    import yaml

    from pipeline.config import merge, params_from_dict, to_dict
    base = profile_dict()
    spec = parse_sweep({**SPEC, "overrides": {"train": {"steps": 7}}}, base)
    trials = expand(spec, base)
    # the second configuration wins (unrolled, K=3): each seed's val PSNR is made highest for it
    records = [{"trial_id": t.trial_id, "status": "finished", "values": [list(v) for v in t.values], "seed": t.seed,
                "metrics": {"val_psnr": 30.0 if dict(t.values) == {"strategy": "unrolled", "K": 3} else 20.0 + t.seed}}
               for t in trials]
    ranking = rank(results_frame(records, spec), spec)
    trial, overrides = winner_overrides(spec, trials, ranking)
    assert dict(trial.values) == {"strategy": "unrolled", "K": 3}
    assert overrides == {"tasks": {"deblur": {"train": {"steps": 7, "strategy": "unrolled"}, "model": {"stages": 3}}}}
    text = best_yaml(spec, trial, overrides, ranking)
    assert text.startswith("# The winner of sweep 't': strategy=unrolled, K=3") and "30.000 dB" in text
    assert yaml.safe_load(text) == overrides
    applied = merge(base, overrides)
    for seed in spec.seeds:  # the pipeline's train@deblur-<seed> resolves to that seed's trial
        got = params_from_dict(merge(applied, {"base": {"seed": seed}}), "deblur")
        want = next(t for t in trials if t.seed == seed and dict(t.values) == dict(trial.values)).params
        for section in ("base", "prepare", "degrade", "model", "train", "tune", "evaluate"):
            assert to_dict(getattr(got, section)) == to_dict(getattr(want, section)), section
    for task in ("derain", "dehaze"):  # the other tasks train what they trained before
        assert to_dict(params_from_dict(applied, task)) == to_dict(params_from_dict(base, task))
