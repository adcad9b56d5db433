"""The one search space, the rule starts (the IRCNN/DPIR constants of pipeline.baselines.schedules),
the searched schedule family and the objectives, on real small samples."""
import numpy as np
import pytest
import torch

from pipeline.baselines.schedules import DPIR, IRCNN, SIGMA_START, dpir_schedule, ircnn_schedule
from pipeline.baselines.tuning import CLASSICAL, LAM_RANGE, OBJECTIVE_MODULES, classical_objective, deconvolve, \
    objective_code_version, rule_starts, schedule_objective, schedule_psnr, schedule_searches, schedule_space, \
    study_key, subset, tuned_schedule
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.datasets import Sample
from pipeline.generators.kernels import gaussian_kernel
from pipeline.models.denoiser import ConditionedDenoiser
from pipeline.synthesis import blur_circular


def test_the_rules_are_the_papers_expressions_bit_for_bit():
    for level in (1.0, 3.0, 3.5, 5.0, 7.0):
        sigma = level / 100.0
        ircnn, dpir = rule_starts(level, max_iterations=6)
        assert ircnn["lam"] == sigma**2 / 3 and dpir["lam"] == 0.23 * sigma**2  # the floats tuned.yaml records
        assert ircnn["s_start"] == dpir["s_start"] == SIGMA_START and ircnn["s_end"] == sigma
        assert ircnn["iterations"] == 6 and dpir["iterations"] == DPIR.iterations
    assert IRCNN.lam_factor == 1.0 / 3.0 and DPIR.lam_factor == 0.23
    assert ircnn_schedule(0.03).iterations == IRCNN.iterations and dpir_schedule(0.03).iterations == DPIR.iterations


def test_a_rule_written_in_the_searched_family_is_the_rule():
    for rule, schedule in ((0, ircnn_schedule(0.03, 30)), (1, dpir_schedule(0.03, 8))):
        tuned = tuned_schedule(rule_starts(3.0, 30)[rule])
        assert torch.allclose(tuned.sigmas, schedule.sigmas) and torch.allclose(tuned.rhos, schedule.rhos, rtol=1e-5)


def test_the_space_is_the_tune_stages():
    space = {k.name: k for k in schedule_space(12)}
    assert list(space) == ["lam", "s_start", "s_end", "iterations"]
    assert (space["lam"].low, space["lam"].high) == LAM_RANGE and space["lam"].log
    assert space["iterations"].integer and not space["iterations"].log and space["iterations"].high == 12


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    x = limit_size(to_channels(load_skimage("camera"), gray=True), 48)[..., 0][None]
    k = gaussian_kernel(1.2, 1.2, 0.0, 7)
    out = []
    for i, level in enumerate((1.0, 1.0, 1.0, 5.0)):
        y = blur_circular(x, k) + level / 100 * np.random.default_rng(i).standard_normal(x.shape).astype(np.float32)
        out.append(Sample(f"s{i}", "val", "camera", y, x, np.full_like(x, level / 100), k,
                          record={"noise_level": str(level)}))
    return out


def test_searches_are_one_global_and_one_per_level_on_seeded_subsets(samples):
    jobs = schedule_searches(samples, max_samples=2, max_iterations=6, seed=0)
    assert [j.name for j in jobs] == ["global", "noise-1", "noise-5"]
    assert jobs[0].initial == rule_starts(3.0, 6)  # the rules at the median level
    assert len(jobs[1].samples) == 2 and {s.noise_level for s in jobs[1].samples} == {1.0}
    assert subset(samples, 2, 0, "global") == subset(samples, 2, 0, "global") == jobs[0].samples
    assert [s.sample_id for s in subset(samples, 3, 0, "x")] == sorted(s.sample_id for s in subset(samples, 3, 0, "x"))


def test_the_objectives_score_the_restorations(samples):
    torch.manual_seed(0)
    den = ConditionedDenoiser(1, 8, (1, 2, 1)).eval()
    params = rule_starts(1.0, 6)[0]
    scores = schedule_psnr(params, samples[:2], den, torch.device("cpu"))
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert schedule_objective(samples[:2], den, torch.device("cpu"))(params) == pytest.approx(np.mean(scores))
    for method, (_, knob) in CLASSICAL.items():
        value = knob.low * 2 if not knob.integer else 5.4
        out = deconvolve(method, samples[0].y, samples[0].kernel, value)
        assert out.shape == samples[0].y.shape and np.isfinite(out).all()
        assert np.isfinite(classical_objective(method, samples[:1])({knob.name: value}))


def test_the_study_key_changes_with_everything_that_changes_the_objective():
    settings = {"max_iterations": 30, "max_samples": 4, "seed": 0}
    base = study_key("model", "data", settings, code="v1")
    assert study_key("model", "data", dict(reversed(list(settings.items()))), code="v1") == base  # order-free
    changed = [study_key("other-model", "data", settings, code="v1"),
               study_key("model", "other-data", settings, code="v1"),
               study_key("model", "data", {**settings, "max_iterations": 40}, code="v1"),  # the search space
               study_key("model", "data", {**settings, "max_samples": 8}, code="v1"),  # what a trial scores
               study_key("model", "data", {**settings, "seed": 1}, code="v1"),
               study_key("model", "data", settings, code="v2")]
    assert base not in changed and len(set(changed)) == len(changed)
    assert study_key("model", "data", settings) == study_key("model", "data", settings, objective_code_version())


def test_the_objective_code_version_reads_the_objectives_modules():
    import sys
    from pathlib import Path
    version = objective_code_version()
    assert len(version) == 64 and all(name in sys.modules for name in OBJECTIVE_MODULES)
    assert Path(sys.modules["pipeline.baselines.pnp"].__file__).name == "pnp.py"
    assert objective_code_version() == version


def test_the_budget_split_sums_to_the_total():
    from pipeline.baselines.tuning import budget_split
    shares = budget_split(600.0, ["1", "3", "5", "7"], ["wiener", "richardson_lucy", "tv"])
    assert shares["global"] == pytest.approx(200.0) and shares["noise-3"] == pytest.approx(75.0)
    assert shares["tv"] == pytest.approx(100.0 / 3) and sum(shares.values()) == pytest.approx(600.0)


def test_a_tuned_schedule_is_kept_only_if_it_beats_its_best_rule():
    from pipeline.baselines.tuning import keep_or_rule, rule_starts
    starts = rule_starts(3.0, 30)
    found = {"lam": 1e-4, "s_start": 0.2, "s_end": 0.02, "iterations": 12}
    kept = keep_or_rule(found, 25.3, starts, [25.0, 25.2])
    assert kept["kept"] == "tuned" and kept["lam"] == 1e-4 and kept["rule_val_psnr"] == 25.2
    rule = keep_or_rule(found, 25.2, starts, [25.0, 25.2])  # a tie is no win: the rule stays
    assert rule["kept"] == "rule" and rule["source"] == "dpir" and rule["iterations"] == starts[1]["iterations"]
    assert {k: rule[k] for k in found} == {k: starts[1][k] for k in found} and rule["val_psnr"] == 25.2


def test_the_oracle_queues_every_rule_it_was_told_and_every_tuned_schedule_once():
    from pipeline.baselines.tuning import oracle_starts, rule_starts
    tuned = {"global": {"lam": 1e-4, "s_start": 0.19, "s_end": 0.03, "iterations": 5, "val_psnr": 25.0, "kept": "tuned"},
             "per_noise": {"1": {"lam": 3e-5, "s_start": 0.19, "s_end": 0.01, "iterations": 5, "trials": 9}}}
    starts = oracle_starts(tuned, [1.0, 3.0, 1.0], 30)
    rules = rule_starts(1.0, 30) + rule_starts(3.0, 30)
    assert starts[:4] == rules and len(starts) == 6  # the repeated level is queued once
    assert starts[4] == {"lam": 1e-4, "s_start": 0.19, "s_end": 0.03, "iterations": 5}  # extra keys dropped
    assert oracle_starts(None, [2.0], 30) == rule_starts(2.0, 30)
