"""The evaluation protocol on real small samples: method gating, the tables' shapes and their
agreement with each other, the per-sample hook, the rain/haze variant and the mismatch table."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline import io
from pipeline.config import CONTROLS, ModelConfig
from pipeline.data import limit_size, load_skimage, to_channels
from pipeline.datasets import Sample, blurred_samples, pair_samples
from pipeline.baselines.pnp import run_map_schedule
from pipeline.evaluation import ALL_METHODS, ESTIMATED_GUIDANCE, ESTIMATED_MAP_GUIDANCE, LOCAL_MAP_METHODS, \
    MISMATCH_TOLD, NO_GUIDANCE, ORACLE, TASK_METHODS, Methods, aggregate, headline_pairs, merge_seeds, \
    evaluate, evaluate_learned, gap_summary, markdown_table, method_names, mismatch_rows, mismatch_table, restore, \
    restore_sample, score, select_methods
from pipeline.metrics import PSNR_CAP_DB
from pipeline.models.factory import build_model
from pipeline.physics.blur import BlurPhysics
from pipeline.physics.noise import local_level_map
from pipeline.synthesis import TaskSpec, degrade_task

CFG = ModelConfig(stages=2, denoiser_width=8, denoiser_dilations=(1, 2, 1), proxy_width=8)
TUNED = {"global": {"lam": 1e-4, "s_start": 0.19, "s_end": 0.03, "iterations": 4},
         "per_noise": {"1": {"lam": 3e-5, "s_start": 0.19, "s_end": 0.01, "iterations": 4},
                       "5": {"lam": 8e-4, "s_start": 0.19, "s_end": 0.05, "iterations": 4}},
         "classical": {"wiener": {"balance": 0.05}, "richardson_lucy": {"num_iter": 5}, "tv": {"lam": 2e-3}}}
CPU = torch.device("cpu")


def model(guidance: str = "learned", task: str = "deblur", channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**CFG.__dict__, "guidance": guidance})
    return build_model(cfg, channels, task=task).eval()


@pytest.fixture(scope="module")
def blurred(tmp_path_factory) -> list[Sample]:
    """Two images x one kernel x levels 1 and 5 %, degraded on the fly."""
    folder = tmp_path_factory.mktemp("images")
    for name in ("camera", "coins"):
        io.write_image(folder / f"{name}.png", limit_size(to_channels(load_skimage(name), gray=True), 32))
    k = np.outer(np.hanning(5), np.hanning(5)).astype(np.float32)
    return list(blurred_samples(io.list_images(folder), [("k0", k / k.sum())], [1.0, 5.0], seed=0))


def test_a_control_runs_only_with_its_model():
    known = method_names("deblur", benchmark=True)
    assert known[-8:] == (ORACLE, "oracle_per_image_ft", NO_GUIDANCE, ESTIMATED_GUIDANCE, "direct_cnn",
                          *LOCAL_MAP_METHODS)
    assert set(ALL_METHODS) < set(known) and not set(LOCAL_MAP_METHODS) & set(method_names("deblur"))

    def without(*dropped):
        return tuple(m for m in known if m not in dropped)

    # estimated_map_guidance runs estimated_guidance's model: it goes and comes with that model
    assert select_methods(known, []) == without(NO_GUIDANCE, ESTIMATED_GUIDANCE, "direct_cnn", ESTIMATED_MAP_GUIDANCE)
    assert select_methods(known, [], [NO_GUIDANCE]) == without(ESTIMATED_GUIDANCE, "direct_cnn", ESTIMATED_MAP_GUIDANCE)
    assert select_methods(known, [], [ESTIMATED_GUIDANCE]) == without(NO_GUIDANCE, "direct_cnn")
    assert select_methods(known, [], [NO_GUIDANCE, ESTIMATED_GUIDANCE, "direct_cnn"]) == known
    with pytest.raises(io.InputError, match="estimated_map_guidance: needs its control model .*'estimated'"):
        select_methods(known, ["learned", ESTIMATED_MAP_GUIDANCE], [NO_GUIDANCE])
    assert select_methods(TASK_METHODS, ["classical", "input"]) == ("classical", "input")  # asked order
    with pytest.raises(io.InputError, match="no_guidance: needs its control model"):
        select_methods(known, ["learned", NO_GUIDANCE])
    with pytest.raises(io.InputError, match="unknown"):
        select_methods(TASK_METHODS, ["ircnn_true"])
    with pytest.raises(io.InputError, match="estimated_guidance: needs its control model"):
        Methods("deblur", ("learned", ESTIMATED_GUIDANCE), model(), CPU)
    with pytest.raises(io.InputError, match="no pre-trained denoiser"):
        Methods("deblur", ("learned", "ircnn_true"), model(), CPU)
    with pytest.raises(io.InputError, match="tuned.yaml"):
        Methods("deblur", ("learned", "wiener"), model(), CPU)


def test_the_tables_of_one_run_agree_with_each_other_and_with_the_methods(blurred):
    net = model()
    names = ("input", "learned", "ircnn_true", "true_sigma_map", "optuna_per_noise", "wiener", NO_GUIDANCE)
    methods = Methods("deblur", names, net, CPU, net.denoiser, {NO_GUIDANCE: model("none")}, TUNED, 0.01, ircnn_iters=3,
                      dpir_iters=2)
    seen = []
    result = evaluate(blurred, methods, extras=lambda s, res: seen.append((s.sample_id, list(res.outputs))))
    assert [s for s, _ in seen] == [s.sample_id for s in blurred] and all(o == list(names) for _, o in seen)
    assert len(result.rows) == len(blurred) * len(names) and result.levels == [1.0, 5.0]
    assert set(result.rows[0]) == {"sample_id", "image", "kernel_id", "noise_level", "method", "psnr", "ssim"}
    m = result.metrics
    assert m["noise_levels"] == [1, 5] and m["n_images"] == 2 and m["n_kernels"] == 1 and list(m["methods"]) == list(names)
    for name in names:
        for lvl in (1.0, 5.0):
            vals = [r["psnr"] for r in result.rows if r["method"] == name and r["noise_level"] == lvl]
            assert m["methods"][name]["psnr"][f"{lvl:g}"] == pytest.approx(np.mean(vals))
    assert {r["method"] for r in result.level_rows} == set(names) and len(result.level_rows) == 2 * len(names)
    assert len(result.stage_rows) == len(blurred) * 2 and len(result.guidance_rows) == len(blurred)
    assert set(result.guidance_metrics) == {"guidance_mae_255", "estimated_sigma_mae_255"}
    # the protocol's numbers are those of restoring and scoring one sample by hand
    s = blurred[-1]
    by_hand = score(restore(s.y, s.kernel, s.target, net, net.denoiser, CPU, 0.01, 3, 2, names, TUNED).outputs, s.x,
                    s.kernel_shape)
    row = {r["method"]: r["psnr"] for r in result.rows if r["sample_id"] == s.sample_id}
    assert all(row[k] == by_hand[k]["psnr"] for k in by_hand)
    # the sweep's score of a trial is the same protocol, the learned model alone
    assert evaluate_learned(net, blurred, CPU).metrics["methods"]["learned"] == m["methods"]["learned"]


def test_extras_are_scored_with_the_rest_and_a_missing_output_is_an_error(blurred):
    net = model()
    methods = Methods("deblur", ("input", ORACLE), net, CPU, net.denoiser, tuned=TUNED)
    result = evaluate(blurred[:2], methods, extras=lambda s, res: {ORACLE: s.x * 0.9}, with_id=False)
    assert "sample_id" not in result.rows[0]
    oracle = [r["psnr"] for r in result.rows if r["method"] == ORACLE]
    assert oracle == [score({ORACLE: s.x * 0.9}, s.x, s.kernel_shape)[ORACLE]["psnr"] for s in blurred[:2]]
    with pytest.raises(ValueError, match="no output for"):
        evaluate(blurred[:1], methods)


def rain_pairs(root) -> list:
    """Two 32-px rain / no-rain pairs (coffee, astronaut) written under ``root``, as ``io.list_pairs`` reads them."""
    for i, name in enumerate(("coffee", "astronaut")):
        x = limit_size(to_channels(load_skimage(name), gray=False), 32)
        y = degrade_task(np.ascontiguousarray(x.transpose(2, 0, 1)), TaskSpec("derain"), np.random.default_rng(i)).y
        io.write_image(root / "rain" / f"{i}.png", y.transpose(1, 2, 0))
        io.write_image(root / "norain" / f"{i}.png", x)
    return io.list_pairs(root, "rain", "norain")


def test_rain_pairs_without_a_target_score_learned_and_refuse_oracle_guidance(tmp_path):
    pairs = rain_pairs(tmp_path)
    names = select_methods(TASK_METHODS, [])
    result = evaluate(pair_samples(pairs), Methods("derain", names, model(task="derain", channels=3), CPU))
    assert result.metrics["task"] == "derain" and result.metrics["noise_levels"] == [] and result.levels == []
    assert list(result.metrics["methods"]) == ["input", "learned", "classical"] and "n_kernels" not in result.metrics
    assert result.guidance_rows == [] and result.guidance_metrics == {} and result.level_rows == []
    oracle = Methods("derain", names, model("oracle", task="derain", channels=3), CPU)
    with pytest.raises(io.InputError, match="oracle"):
        evaluate(pair_samples(pairs), oracle)


def test_methods_no_seed_changes_run_once_per_sample_across_seeds(tmp_path, monkeypatch):
    """``dgsm`` and ``classical`` are the same for every training seed: with ``shared`` the second
    seed reuses the first's outputs, and its tables are those of a run without sharing."""
    from pipeline import evaluation
    calls = []
    dgsm = evaluation.TASK_EXTRAS["derain"]["dgsm"]
    monkeypatch.setitem(evaluation.TASK_EXTRAS["derain"], "dgsm", lambda y: calls.append(1) or dgsm(y))
    pairs = rain_pairs(tmp_path)
    names = ("input", "learned", "classical", "dgsm")
    shared: dict = {}
    runs = [evaluate(pair_samples(pairs), Methods("derain", names, model(task="derain", channels=3, seed=s), CPU,
                                                  shared=shared), seed=s) for s in (0, 1)]
    assert len(calls) == 2 and len(shared) == 2  # once per sample, not once per sample and seed
    alone = evaluate(pair_samples(pairs), Methods("derain", names, model(task="derain", channels=3, seed=1), CPU), seed=1)
    assert len(calls) == 4 and runs[1].rows == alone.rows
    assert runs[0].metrics["methods"]["learned"] != runs[1].metrics["methods"]["learned"]  # the seeds differ


def test_the_mismatch_table_tells_the_non_blind_methods_other_levels(blurred):
    net = model()
    methods = Methods("deblur", ("learned", "ircnn_true", "optuna_per_noise"), net, CPU, net.denoiser, tuned=TUNED,
                      ircnn_iters=3)
    learned = np.zeros_like(blurred[0].x)
    rows = mismatch_rows(blurred[0], methods, learned)
    assert len(rows) == len(MISMATCH_TOLD) * 3
    table = mismatch_table(rows)
    assert table["told"] == list(MISMATCH_TOLD) and list(table["psnr"]) == ["ircnn_true", "optuna_per_noise", "learned"]
    assert len(set(table["psnr"]["learned"].values())) == 1  # blind: the same output whatever it is told
    assert len(set(table["psnr"]["ircnn_true"].values())) == len(MISMATCH_TOLD)


def test_the_markdown_table_and_the_gap_summary():
    entry = lambda v: {"psnr": {"1": v}, "ssim": {"1": 0.5}, "psnr_mean": v, "ssim_mean": 0.5}
    metrics = {"noise_levels": [1], "methods": {"optuna_global": entry(20.0), ORACLE: entry(22.0), "learned": entry(21.5)}}
    summary = gap_summary(metrics)
    assert summary["psnr"]["gap_db"] == 2.0 and summary["psnr"]["gap_closed"] == 0.75 and "1" in summary["per_noise"]
    text = markdown_table(metrics, list(metrics["methods"]), summary)
    assert "| 1 | 20.00 / 0.500 |" in text and "learned closes 75 %" in text
    assert gap_summary({"methods": {"learned": entry(1.0)}}) == {}


def test_a_resumed_evaluation_runs_only_the_samples_not_done_and_equals_an_uninterrupted_one(blurred):
    """``done`` (what ``on_scored`` was handed, as a journal would keep it, through JSON) is reused;
    a sample whose data changed since is run again."""
    import json
    net = model()
    methods = Methods("deblur", ("input", "learned", "ircnn_true"), net, CPU, net.denoiser, ircnn_iters=3,
                      mismatch=True)
    journal: list[dict] = []
    whole = evaluate(blurred, methods, on_scored=lambda s, scored: journal.append(json.loads(json.dumps(scored))))
    assert [r["sample_id"] for r in journal] == [s.sample_id for s in blurred] and whole.n_resumed == 0
    ran = []
    done = {r["sample_id"]: r for r in journal[:2]}
    resumed = evaluate(blurred, methods, done=done, on_scored=lambda s, scored: ran.append(s.sample_id))
    assert ran == [s.sample_id for s in blurred[2:]] and resumed.n_resumed == 2
    assert (resumed.rows, resumed.stage_rows, resumed.guidance_rows, resumed.metrics) == \
        (whole.rows, whole.stage_rows, whole.guidance_rows, whole.metrics)
    assert resumed.mismatch_rows == whole.mismatch_rows == []  # no sample at MISMATCH_TRUE (3 %)
    changed = [replace(blurred[0], y=blurred[0].y + 0.01), *blurred[1:]]
    ran.clear()
    evaluate(changed, methods, done=done, on_scored=lambda s, scored: ran.append(s.sample_id))
    assert ran == [blurred[0].sample_id, *[s.sample_id for s in blurred[2:]]]


def test_capped_psnrs_are_named_in_the_metrics():
    rows = [{"image": "a", "method": "input", "psnr": PSNR_CAP_DB, "ssim": 1.0},
            {"image": "b", "method": "input", "psnr": 20.0, "ssim": 0.5},
            {"image": "a", "method": "learned", "psnr": 30.0, "ssim": 0.9}]
    metrics = aggregate(rows, [], ("input", "learned"))
    assert metrics["psnr_capped"] == {"input": ["a"]} and metrics["psnr_cap_db"] == PSNR_CAP_DB
    assert "psnr_capped" not in aggregate(rows[1:], [], ("input", "learned"))


def test_the_ft_baselines_run_the_learned_models_denoiser_and_nothing_else(blurred):
    net = model()
    names = ("ircnn_estimated", "ircnn_estimated_ft", "optuna_per_noise", "optuna_per_noise_ft")
    same = restore_sample_outputs(blurred[0], Methods("deblur", names, net, CPU, net.denoiser, tuned=TUNED, ircnn_iters=3))
    # with the learned model's own denoiser as the pre-trained one, each *_ft is its baseline exactly
    assert np.array_equal(same["ircnn_estimated"], same["ircnn_estimated_ft"])
    assert np.array_equal(same["optuna_per_noise"], same["optuna_per_noise_ft"])
    other = model(seed=1).denoiser  # another prior: only the baselines change
    moved = restore_sample_outputs(blurred[0], Methods("deblur", names, net, CPU, other, tuned=TUNED, ircnn_iters=3))
    assert np.array_equal(moved["ircnn_estimated_ft"], same["ircnn_estimated_ft"])
    assert not np.allclose(moved["ircnn_estimated"], same["ircnn_estimated"])


def restore_sample_outputs(sample, methods):
    from pipeline.evaluation import restore_sample
    return restore_sample(sample, methods).outputs


def test_seeds_merge_into_means_spreads_and_paired_comparisons(blurred):
    names = ("input", "learned", "ircnn_estimated", NO_GUIDANCE, ESTIMATED_GUIDANCE)
    results = []
    for seed in (0, 1):
        net = model(seed=seed)
        controls = {NO_GUIDANCE: model("none", seed=seed), ESTIMATED_GUIDANCE: model("estimated", seed=seed)}
        results.append(evaluate(blurred, Methods("deblur", names, net, CPU, net.denoiser, controls, ircnn_iters=3),
                                seed=seed))
    merged = merge_seeds(results)
    m = merged.metrics
    assert m["seeds"] == [0, 1] and {r["seed"] for r in merged.rows} == {0, 1}
    assert len(merged.rows) == 2 * len(blurred) * len(names)
    for name in names:
        per_seed = [r.metrics["methods"][name]["psnr_mean"] for r in results]
        assert m["methods"][name]["psnr_mean"] == pytest.approx(np.mean(per_seed))
        assert m["methods"][name]["psnr_std_seeds"] == pytest.approx(np.std(per_seed, ddof=1))
    pairs = [(c["a"], c["b"]) for c in m["comparisons"]]
    assert pairs == headline_pairs("deblur", names)
    assert ("learned", "input") not in pairs and (ESTIMATED_GUIDANCE, NO_GUIDANCE) in pairs
    c = m["comparisons"][0]
    assert c["n"] == 2 * len(blurred) and c["seeds"] == [0, 1] and set(c["per_level"]) == {"1", "5"}
    diffs = [a["psnr"] - b["psnr"] for a, b in zip(
        (r for r in merged.rows if r["method"] == c["a"]), (r for r in merged.rows if r["method"] == c["b"]))]
    assert c["diff_mean"] == pytest.approx(np.mean(diffs)) and c["ci95"][0] < c["diff_mean"] < c["ci95"][1]


def test_the_estimated_control_feeds_the_classical_level_as_a_constant_map(blurred):
    from pipeline.physics.blur import BlurPhysics
    from pipeline.physics.noise import estimate_noise_level
    control, s = model("estimated"), blurred[-1]
    out = control(BlurPhysics(torch.from_numpy(s.y)[None], torch.from_numpy(s.kernel)))
    level = estimate_noise_level(s.y)
    last = out.guidance[-1]  # the decay ends at the level (times the gain, zero at init)
    assert torch.allclose(last, torch.full_like(last, level), rtol=1e-5) and out.proxy_maps == []
    assert torch.allclose(out.rhos, control.penalties(torch.tensor([level])), rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_deblurring_method_runs_on_cuda_and_scores_as_on_the_cpu(tmp_path):
    """The protocol on a GPU (bf16 autocast for the networks, float32 FFT data steps): the
    plug-and-play schedules, built on the CPU, follow the observation to the device, and every
    method's PSNR (every control, the per-pixel map of a varying noise level, the mismatch rows)
    is within 0.1 dB of the CPU's on the same samples."""
    io.write_image(tmp_path / "camera.png", limit_size(to_channels(load_skimage("camera"), gray=True), 32))
    k = np.outer(np.hanning(5), np.hanning(5)).astype(np.float32)
    samples = list(blurred_samples(io.list_images(tmp_path), [("k0", k / k.sum())], [1.0, 3.0], seed=0,
                                   noise_mode="varying"))
    assert np.ptp(samples[0].target) > 0  # a varying map: true_sigma_map runs its own schedule
    names = ("input", "learned", *[m for m in ALL_METHODS if m not in ("input", "learned")], *CONTROLS,
             *LOCAL_MAP_METHODS)
    cuda = torch.device("cuda")

    def methods(device: torch.device) -> Methods:
        net = model().to(device)
        controls = {name: model(mode).to(device) for name, mode in CONTROLS.items()}
        return Methods("deblur", names, net, device, net.denoiser, controls, TUNED, 0.01, ircnn_iters=3, dpir_iters=2,
                       mismatch=True)

    on_cpu, on_gpu = evaluate(samples, methods(CPU)), evaluate(samples, methods(cuda))
    assert [(r["sample_id"], r["method"]) for r in on_gpu.rows] == [(r["sample_id"], r["method"]) for r in on_cpu.rows]
    assert {r["method"] for r in on_gpu.rows} == set(names) and on_gpu.mismatch_rows
    for a, b in [*zip(on_cpu.rows, on_gpu.rows), *zip(on_cpu.mismatch_rows, on_gpu.mismatch_rows)]:
        assert abs(a["psnr"] - b["psnr"]) < 0.1, (a, b)


def test_the_local_map_methods_put_the_classical_local_estimate_where_each_model_reads_a_map(tmp_path):
    """Under spatially varying noise: ``ircnn_estimated_map`` is the IRCNN map rule on the local
    estimate, ``learned_estimated_map`` the learned model's pass on it in place of the proxy's map,
    ``estimated_map_guidance`` the estimated_guidance control's pass on it in place of its scalar
    (a different output from that control's own); the last is a headline pair against its control."""
    io.write_image(tmp_path / "camera.png", limit_size(to_channels(load_skimage("camera"), gray=True), 64))
    k = np.outer(np.hanning(5), np.hanning(5)).astype(np.float32)
    sample = next(blurred_samples(io.list_images(tmp_path), [("k0", k / k.sum())], [5.0], seed=0,
                                  noise_mode="varying"))
    net, control = model(), model("estimated", seed=1)
    names = ("learned", ESTIMATED_GUIDANCE, *LOCAL_MAP_METHODS)
    res = restore_sample(sample, Methods("deblur", names, net, CPU, net.denoiser, {ESTIMATED_GUIDANCE: control},
                                         ircnn_iters=3))
    assert tuple(res.outputs) == names
    physics = BlurPhysics(torch.from_numpy(sample.y)[None], torch.from_numpy(sample.kernel))
    local = torch.from_numpy(local_level_map(sample.y))[None]
    with torch.no_grad():
        expected = {"ircnn_estimated_map": run_map_schedule(physics, net.denoiser, local, 3).x,
                    "learned_estimated_map": net.with_map(physics, local).x,
                    ESTIMATED_MAP_GUIDANCE: control.with_map(physics, local).x}
    for name, x in expected.items():
        assert np.allclose(res.outputs[name], x[0].numpy(), atol=1e-6), name
    assert np.abs(res.outputs[ESTIMATED_MAP_GUIDANCE] - res.outputs[ESTIMATED_GUIDANCE]).max() > 1e-4
    assert (ESTIMATED_MAP_GUIDANCE, ESTIMATED_GUIDANCE) in headline_pairs("deblur", names)
