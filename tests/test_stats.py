"""Paired comparisons: the interval against a hand-computed textbook case, the pairing on
(sample, seed), per-level splits, and refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.io import InputError, read_json, write_json
from pipeline.stats import comparisons, paired_interval, seed_spread

T_975_9 = 2.262157  # Student t, 0.975 quantile, 9 degrees of freedom (statistical tables)


def test_the_interval_is_the_textbook_t_interval():
    d = [0.5, 0.1, -0.2, 0.4, 0.3, 0.6, 0.0, 0.2, 0.45, 0.15]
    mean, sd = np.mean(d), np.std(d, ddof=1)
    got = paired_interval(d)
    assert got[0] == pytest.approx(mean)
    assert got[1] == pytest.approx(mean - T_975_9 * sd / math.sqrt(10), abs=1e-5)
    assert got[2] == pytest.approx(mean + T_975_9 * sd / math.sqrt(10), abs=1e-5)
    assert paired_interval([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)
    one = paired_interval([1.0])
    assert one[0] == 1.0 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(InputError):
        paired_interval([])


def rows_for(method, values, seeds=(0,), levels=(1.0,)):
    """One row per (image, level, seed) with the given values in that order."""
    keys = [(i, lvl, s) for s in seeds for lvl in levels for i in range(len(values) // (len(seeds) * len(levels)))]
    return [{"method": method, "image": f"im{i}", "kernel_id": "k0", "noise_level": lvl, "seed": s, "psnr": v}
            for (i, lvl, s), v in zip(keys, values)]


def test_pairs_on_sample_and_seed_with_levels_and_a_verdict():
    a = rows_for("learned", [30, 31, 32, 29, 40, 41, 42, 39], seeds=(0, 1), levels=(1.0, 5.0))
    b = rows_for("base", [29, 30, 31, 28.5, 39, 40, 41.5, 38], seeds=(0, 1), levels=(1.0, 5.0))
    rng = np.random.default_rng(0)
    shuffled = [a[i] for i in rng.permutation(len(a))] + b  # order does not matter: pairing by key
    (c,) = comparisons(shuffled, [("learned", "base"), ("learned", "absent")], levels=[1.0, 5.0])
    diffs = [x["psnr"] - y["psnr"] for x, y in zip(a, b)]
    assert c["a"] == "learned" and c["b"] == "base" and c["n"] == 8 and c["seeds"] == [0, 1]
    assert c["diff_mean"] == pytest.approx(np.mean(diffs)) and c["significant"] and c["winner"] == "learned"
    assert c["ci95"] == pytest.approx(list(paired_interval(diffs)[1:]))
    assert set(c["per_level"]) == {"1", "5"} and c["per_level"]["1"]["n"] == 4
    lvl1 = [x["psnr"] - y["psnr"] for x, y in zip(a, b) if x["noise_level"] == 1.0]
    assert c["per_level"]["1"]["diff_mean"] == pytest.approx(np.mean(lvl1))


def test_no_verdict_when_the_interval_holds_zero_and_a_missing_partner_is_an_error():
    a, b = rows_for("a", [1.0, 2.0, 3.0]), rows_for("b", [1.5, 1.5, 3.1])
    (c,) = comparisons(a + b, [("a", "b")])
    assert c["ci95"][0] < 0 < c["ci95"][1] and not c["significant"] and c["winner"] is None
    with pytest.raises(ValueError, match="without a partner"):
        comparisons(a + b[:2], [("a", "b")])


def test_one_sample_has_no_interval_and_still_writes_json(tmp_path):
    """A benchmark of one image, one kernel and one level pairs one difference: no interval, no
    verdict, and ``metrics.json`` (which refuses NaN) must still be written."""
    a, b = rows_for("learned", [25.0], levels=(3.0,)), rows_for("base", [24.0], levels=(3.0,))
    (c,) = comparisons(a + b, [("learned", "base")], levels=[3.0])
    assert c["diff_mean"] == pytest.approx(1.0) and c["n"] == 1
    assert c["ci95"] == [None, None] and not c["significant"] and c["winner"] is None
    assert c["per_level"]["3"]["ci95"] == [None, None]
    write_json(tmp_path / "metrics.json", {"comparisons": [c]})
    assert read_json(tmp_path / "metrics.json")["comparisons"][0]["ci95"] == [None, None]


def test_seed_spread_is_the_std_of_per_seed_means():
    rows = rows_for("m", [1.0, 3.0, 2.0, 4.0, 6.0, 5.0], seeds=(0, 1, 2))
    got = seed_spread(rows, ["m"])["m"]
    assert got["per_seed"] == {"0": 2.0, "1": 3.0, "2": 5.5}
    assert got["std"] == pytest.approx(np.std([2.0, 3.0, 5.5], ddof=1))
    assert seed_spread(rows_for("m", [1.0, 2.0]), ["m"])["m"]["std"] is None


T_975_2 = 4.302653  # Student t, 0.975 quantile, 2 degrees of freedom (statistical tables)


def test_the_interval_over_seeds_takes_the_trained_model_as_the_unit():
    """Per seed, ``a`` beats ``b`` by an almost constant offset on every sample, but one seed's
    offset is large and the others' near 0: the interval over the (sample, seed) pairs excludes 0,
    the interval over the seeds' means (a textbook t-interval, 2 degrees of freedom) holds it."""
    offsets = {0: 0.30, 1: 0.02, 2: 0.05}
    a = rows_for("a", [20.0 + i for i in range(4)] * 3, seeds=(0, 1, 2))
    b = [dict(r, method="b", psnr=r["psnr"] - offsets[r["seed"]] + 0.001 * (i % 4)) for i, r in enumerate(a)]
    (c,) = comparisons(a + b, [("a", "b")])
    means = [np.mean([x["psnr"] - y["psnr"] for x, y in zip(a, b) if x["seed"] == s]) for s in (0, 1, 2)]
    assert c["per_seed"] == pytest.approx({"0": means[0], "1": means[1], "2": means[2]})
    half = T_975_2 * np.std(means, ddof=1) / math.sqrt(3)
    assert c["ci95_seeds"] == pytest.approx([np.mean(means) - half, np.mean(means) + half], abs=1e-5)
    assert c["ci95_seeds"][0] < 0 < c["ci95_seeds"][1]
    assert c["significant"] and c["winner"] == "a"  # what the interval over (sample, seed) pairs says
    (one,) = comparisons(rows_for("a", [1.0, 2.0]) + rows_for("b", [0.5, 1.0]), [("a", "b")])
    assert one["per_seed"] == {"0": pytest.approx(0.75)} and one["ci95_seeds"] == [None, None]
