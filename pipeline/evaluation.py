"""The evaluation protocol: every method on a stream of samples, scored, aggregated into tables.

The ``evaluate`` stage (the degraded test split) and the benchmark command (a folder of images x
a kernel file degraded on the fly, or a folder of real pairs) differ only in where their
:class:`~pipeline.datasets.Sample`\\ s come from and in their per-sample extras; both call
:func:`evaluate` with a :class:`Methods`, so both report the same methods under the same names
and the same protocol (PSNR/SSIM via ``skimage.metrics``, the kernel's half-size cropped from
each border; ``docs/method.md``). Which methods run (``no_guidance`` only with an ablation model,
``oracle`` guidance only with the true map) is decided here, once.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from pipeline import stats
from pipeline.baselines.dgsm import dgsm_derain
from pipeline.baselines.filters import dark_channel_prior, median_derain
from pipeline.baselines.pnp import run_map_schedule, run_schedule
from pipeline.baselines.schedules import dpir_schedule, ircnn_schedule
from pipeline.baselines.tuning import CLASSICAL, deconvolve, tuned_schedule
from pipeline.config import CONTROLS
from pipeline.data import chw_to_hwc
from pipeline.datasets import Sample
from pipeline.device import autocast
from pipeline.io import InputError
from pipeline.metrics import PSNR_CAP_DB, kernel_crop, luminance, psnr, ssim
from pipeline.models.task_models import Observation
from pipeline.models.unfolded import UnfoldedHQS
from pipeline.physics.blur import BlurPhysics
from pipeline.physics.noise import estimate_noise_level, local_level_map

PNP_METHODS = ("ircnn_blind", "ircnn_true", "ircnn_estimated", "dpir_blind", "dpir_true", "dpir_estimated")
TUNED_METHODS = ("optuna_global", "optuna_per_noise")
CLASSICAL_METHODS = ("wiener", "richardson_lucy", "tv")
# the learned model's fine-tuned denoiser in a plug-and-play baseline: separates fine-tuning from
# guidance (the plain baselines use the denoiser as it was after pre-training)
FT_METHODS = ("ircnn_estimated_ft", "optuna_per_noise_ft")
METHODS = ("input", "learned", *PNP_METHODS, "true_sigma_map")
ALL_METHODS = (*METHODS, *TUNED_METHODS, *FT_METHODS, *CLASSICAL_METHODS)
NO_GUIDANCE = "no_guidance"  # the control trained with guidance 'none'
ESTIMATED_GUIDANCE = "estimated_guidance"  # the control trained with guidance 'estimated'
CONTROL_METHODS = tuple(CONTROLS)  # no_guidance, estimated_guidance, direct_cnn: models of their own (Methods.controls)
TASK_METHODS = ("input", "learned", *CONTROL_METHODS, "classical")
# a published classical method that is not the rain models' own start (the directional global sparse model)
DGSM = "dgsm"
# the published classical methods a task runs beside ``classical``: name -> restore ``(C, H, W)`` -> ``(C, H, W)``
TASK_EXTRAS: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {"derain": {DGSM: dgsm_derain}}
# the benchmark's per-image schedule searches (extras, see stages/benchmark.py): bounds of the
# fixed-form schedules of the pre-trained denoiser (ORACLE_CANDIDATES) and of the fine-tuned one (FT_METHODS)
ORACLE = "oracle_per_image"
ORACLE_FT = "oracle_per_image_ft"
ORACLE_CANDIDATES = (*PNP_METHODS, *TUNED_METHODS)
NEEDS_TUNED = (*TUNED_METHODS, "optuna_per_noise_ft", *CLASSICAL_METHODS, ORACLE, ORACLE_FT)
# the classical local noise-map estimate (pipeline.physics.noise.local_level_map) wherever a map is
# read: the IRCNN rule driven by it (as true_sigma_map by the true map), the learned model's networks
# with it in place of the proxy's map, and the estimated_guidance control with it in place of its
# scalar. The benchmark's: under spatially varying noise they are the proxy's classical rivals
ESTIMATED_MAP_GUIDANCE = "estimated_map_guidance"
LOCAL_MAP_METHODS = ("ircnn_estimated_map", "learned_estimated_map", ESTIMATED_MAP_GUIDANCE)
# a method that runs a control's model under another name: the control it needs
CONTROL_OF = {**{m: m for m in CONTROL_METHODS}, ESTIMATED_MAP_GUIDANCE: ESTIMATED_GUIDANCE}


def method_names(task: str, benchmark: bool = False) -> tuple[str, ...]:
    """Every method of ``task``, in table order (``benchmark``: with the benchmark's own, the
    per-image oracles and the local-map methods)."""
    if task != "deblur":
        return (*TASK_METHODS, *TASK_EXTRAS.get(task, {}))
    extra = (ORACLE, ORACLE_FT) if benchmark else ()
    return (*ALL_METHODS, *extra, *CONTROL_METHODS, *(LOCAL_MAP_METHODS if benchmark else ()))


def select_methods(known: Sequence[str], requested: Sequence[str], controls: Iterable[str] = ()) -> tuple[str, ...]:
    """The methods to run: ``requested`` (in its order) or every ``known`` one. A control
    (``no_guidance``, ``estimated_guidance``) needs its model (``controls``: the names of those
    given; ``estimated_map_guidance`` runs ``estimated_guidance``'s): without one it is dropped from
    the default list, an InputError when requested by name."""
    unknown = [m for m in requested if m not in known]
    if unknown:
        raise InputError(f"methods: unknown {unknown}; known: {', '.join(known)}")
    have = set(controls)
    require_controls(requested, have)
    return tuple(m for m in (requested or known) if m not in CONTROL_OF or CONTROL_OF[m] in have)


def require_controls(names: Iterable[str], have: Iterable[str]) -> None:
    """An InputError naming every method of ``names`` whose control model (:data:`CONTROL_OF`) is
    not among ``have``."""
    have = set(have)
    missing = [m for m in names if m in CONTROL_OF and CONTROL_OF[m] not in have]
    if missing:
        raise InputError(f"{', '.join(missing)}: needs its control model (a model trained with guidance "
                         f"{', '.join(repr(CONTROLS[CONTROL_OF[m]]) for m in missing)})")


def needs_tuned(names: Sequence[str]) -> bool:
    """Whether any of ``names`` reads the ``tune`` stage's winners (``tuned.yaml``)."""
    return any(m in NEEDS_TUNED for m in names)


@dataclass(frozen=True)
class Methods:
    """What the protocol runs on each sample, and with what.

    ``names``: the methods, in table order (names the protocol does not run itself, such as
    :data:`ORACLE`, come from the caller's ``extras``). ``model``: the trained model
    (``learned``; its denoiser, fine-tuned in the bilevel phase, is the ``*_ft`` methods' prior);
    ``denoiser``: the pre-trained one for plug-and-play; ``controls``: the control models by
    method name (``no_guidance``, ``estimated_guidance``); ``tuned``: the ``tune`` stage's winners; ``nominal_sigma``: what the
    blind baselines are told ([0, 1] units). ``mismatch`` (the benchmark's): also score each
    deblurring sample at :data:`MISMATCH_TRUE` % with the non-blind methods told other levels
    (:func:`mismatch_rows`). ``shared``: a dict the caller hands to the ``Methods`` of every
    training seed, where the rain and haze methods that no seed changes (``classical`` and the
    published ones, :data:`TASK_EXTRAS`) keep their output per sample: with several seeds they run
    once per sample, not once per seed (``dgsm`` is the slowest method here).
    """

    task: str
    names: tuple[str, ...]
    model: torch.nn.Module
    device: torch.device
    denoiser: torch.nn.Module | None = None
    controls: Mapping[str, torch.nn.Module] = field(default_factory=dict)
    tuned: dict | None = None
    nominal_sigma: float = 0.01
    ircnn_iters: int = 30
    dpir_iters: int = 8
    mismatch: bool = False
    shared: dict | None = None

    def __post_init__(self) -> None:
        pnp = [m for m in self.names if m in (*PNP_METHODS, *TUNED_METHODS, "true_sigma_map", ORACLE,
                                              "ircnn_estimated_map")]
        if pnp and self.denoiser is None:
            raise InputError(f"{', '.join(pnp)}: the model file has no pre-trained denoiser for plug-and-play")
        require_controls(self.names, self.controls)
        if needs_tuned(self.names) and self.tuned is None:
            raise InputError(f"{', '.join(m for m in self.names if m in NEEDS_TUNED)}: need the tune stage's tuned.yaml")


def per_noise_params(tuned: dict, level: float) -> dict:
    """The schedule tuned for the noise level (percent) nearest to ``level``."""
    table = tuned["per_noise"]
    nearest = min(table, key=lambda k: abs(float(k) - level))
    return table[nearest]


@dataclass
class Restoration:
    """Every method's output for one sample, with what the learned model predicted."""

    outputs: dict[str, np.ndarray]  # method -> (C, H, W)
    guidance: list[np.ndarray]  # K learned maps (H, W), one per stage
    guidance_estimate: np.ndarray  # (H, W) the proxy on y: its estimate of the guidance target
    estimated_sigma: float  # the classical estimate fed to the *_estimated baselines
    rhos: np.ndarray  # (K,) the learned model's penalties


@torch.no_grad()
def restore(y: np.ndarray, kernel: np.ndarray, sigma_map: np.ndarray, model: UnfoldedHQS, denoiser: torch.nn.Module,
            device: torch.device, nominal_sigma: float, ircnn_iters: int = 30, dpir_iters: int = 8,
            methods: tuple[str, ...] = METHODS, tuned: dict | None = None) -> Restoration:
    """Deblur one observation with every method in ``methods`` (others are ignored).

    Args:
        y: ``(C, H, W)`` observation.
        kernel: ``(kh, kw)`` the known blur.
        sigma_map: ``(1, H, W)`` the true noise map (for ``*_true`` and ``true_sigma_map`` only).
        model: the trained unfolded model; ``denoiser`` the pre-trained one for plug-and-play.
        nominal_sigma: what the blind baselines are told ([0, 1] units).
        tuned: the ``tune`` stage's winners (needed for the Optuna and classical methods);
            ``optuna_per_noise`` is told the true level, so it picks that level's schedule.
            The ``*_ft`` methods run with ``model.denoiser`` (fine-tuned in the bilevel phase)
            in place of ``denoiser`` (``optuna_per_noise_ft`` with the schedule tuned for the latter).
            ``ircnn_estimated_map`` and ``learned_estimated_map`` read the classical local map of
            ``y`` (:func:`local_level_map`) where ``true_sigma_map`` and ``learned`` read the true
            map and the proxy's.
    """
    yt = torch.from_numpy(y)[None].to(device)
    physics = BlurPhysics(yt, torch.from_numpy(kernel))
    smap = torch.from_numpy(sigma_map)[None].to(device)
    true_level = float(sigma_map.mean())
    est = estimate_noise_level(y)
    told = {"blind": nominal_sigma, "true": true_level, "estimated": est}
    out: dict[str, np.ndarray] = {}
    guidance: list[np.ndarray] = []
    rhos = np.zeros(0, np.float32)
    guidance_estimate = np.zeros(sigma_map.shape[-2:], np.float32)
    with autocast(device):
        if "input" in methods:
            out["input"] = y
        if "learned" in methods:
            res = model(physics, target=smap)
            out["learned"] = res.x[0].float().cpu().numpy()
            guidance = [g[0, 0].float().cpu().numpy() for g in res.guidance]
            rhos = (res.rhos[0] if res.rhos.dim() == 2 else res.rhos).float().cpu().numpy()
            guidance_estimate = model.estimate_guidance(yt)[0, 0].float().cpu().numpy()
        for name in PNP_METHODS:
            if name not in methods:
                continue
            family, mode = name.split("_")
            schedule = (ircnn_schedule(told[mode], ircnn_iters) if family == "ircnn"
                        else dpir_schedule(told[mode], dpir_iters))
            out[name] = run_schedule(physics, denoiser, schedule).x[0].float().cpu().numpy()
        if "true_sigma_map" in methods:
            if np.ptp(sigma_map) == 0 and "ircnn_true" in out:
                out["true_sigma_map"] = out["ircnn_true"]  # a constant map is exactly the scalar rule
            else:
                out["true_sigma_map"] = run_map_schedule(physics, denoiser, smap, ircnn_iters).x[0].float().cpu().numpy()
        for name in (*TUNED_METHODS, "optuna_per_noise_ft"):
            if name in methods:
                if tuned is None:
                    raise ValueError(f"method {name} needs the tuned schedules (the tune stage's output)")
                p = tuned["global"] if name == "optuna_global" else per_noise_params(tuned, true_level * 100)
                prior = model.denoiser if name.endswith("_ft") else denoiser
                out[name] = run_schedule(physics, prior, tuned_schedule(p)).x[0].float().cpu().numpy()
        if "ircnn_estimated_ft" in methods:
            out["ircnn_estimated_ft"] = run_schedule(physics, model.denoiser, ircnn_schedule(est, ircnn_iters)
                                                     ).x[0].float().cpu().numpy()
        if {"ircnn_estimated_map", "learned_estimated_map"} & set(methods):
            local = torch.from_numpy(local_level_map(y))[None].to(device)
            if "ircnn_estimated_map" in methods:
                out["ircnn_estimated_map"] = run_map_schedule(physics, denoiser, local, ircnn_iters
                                                              ).x[0].float().cpu().numpy()
            if "learned_estimated_map" in methods:
                out["learned_estimated_map"] = model.with_map(physics, local).x[0].float().cpu().numpy()
    for name in CLASSICAL_METHODS:
        if name in methods:
            if tuned is None:
                raise ValueError(f"method {name} needs the tuned knobs (the tune stage's output)")
            out[name] = deconvolve(name, y, kernel, tuned["classical"][name][CLASSICAL[name][1].name])
    return Restoration(out, guidance, guidance_estimate, est, rhos)


def classical_restore(task: str, y: np.ndarray) -> np.ndarray:
    """The classical baseline of a blind task on ``y (C, H, W)``: the median-filter rain
    decomposition or the dark channel prior with guided filtering (:mod:`pipeline.baselines.filters`)."""
    if task == "derain":
        return median_derain(y)
    if task == "dehaze":
        return dark_channel_prior(y)[0]
    raise ValueError(f"no classical baseline for task {task!r}")


def seed_free_outputs(task: str, y: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The rain / haze methods of ``y (C, H, W)`` that no training seed changes: ``classical`` and
    the task's published classical methods (:data:`TASK_EXTRAS`, unless ``names`` leaves them out)."""
    out = {"classical": classical_restore(task, y)}
    for name, restore in TASK_EXTRAS.get(task, {}).items():
        if names is None or name in names:
            out[name] = restore(y)
    return out


@torch.no_grad()
def restore_task(task: str, y: np.ndarray, model: torch.nn.Module, device: torch.device,
                 controls: Mapping[str, torch.nn.Module] | None = None, target: np.ndarray | None = None,
                 names: Sequence[str] | None = None, seed_free: Mapping[str, np.ndarray] | None = None) -> Restoration:
    """Rain or haze removal of ``y (C, H, W)`` by every method: ``input``, ``learned`` (the task
    model), ``classical`` and each control model of ``controls`` under its name (``no_guidance``,
    ``estimated_guidance``). ``guidance_estimate`` is the proxy's map on ``y`` (the predicted density /
    transmission correction), ``guidance`` the K maps fed to the denoiser. ``target (1, H, W)``, the
    true guidance map, is what a model with ``oracle`` guidance is given. The task's published
    classical methods (:data:`TASK_EXTRAS`; rain: ``dgsm``) too, unless ``names`` leaves them out
    (``dgsm`` is the slowest method here). ``seed_free``: those outputs when already computed
    (:func:`seed_free_outputs` of this ``y``), so another seed does not run them again."""
    yt = torch.from_numpy(np.ascontiguousarray(y))[None].to(device)
    truth = torch.from_numpy(target)[None].to(device) if target is not None else None
    out: dict[str, np.ndarray] = {"input": y}
    with autocast(device):
        res = model(Observation(yt), target=truth)
        out["learned"] = res.x[0].float().clamp(0, 1).cpu().numpy()
        estimate = model.estimate_guidance(yt)[0, 0].float().cpu().numpy()
        for name, control in (controls or {}).items():
            out[name] = control(Observation(yt)).x[0].float().clamp(0, 1).cpu().numpy()
    out.update(seed_free if seed_free is not None else seed_free_outputs(task, y, names))
    guidance = [g[0, 0].float().cpu().numpy() for g in res.guidance]
    return Restoration(out, guidance, estimate, float("nan"), res.rhos.float().cpu().numpy())


def restore_sample(sample: Sample, methods: Methods) -> Restoration:
    """Every method of ``methods.names`` that the protocol runs, on one sample; ``outputs`` in
    ``names`` order. A model with ``oracle`` guidance on a sample without a target is an InputError."""
    if sample.target is None and getattr(methods.model, "guidance_mode", "") == "oracle":
        raise InputError(f"{sample.sample_id}: a model with guidance 'oracle' needs the true guidance map, "
                         "which this sample lacks")
    m = methods
    if m.task == "deblur":
        res = restore(sample.y, sample.kernel, sample.target, m.model, m.denoiser, m.device, m.nominal_sigma,
                      m.ircnn_iters, m.dpir_iters, m.names, m.tuned)
        for name in (n for n in m.names if n in CONTROL_METHODS):
            res.outputs[name] = restore(sample.y, sample.kernel, sample.target, m.controls[name], m.denoiser, m.device,
                                        m.nominal_sigma, methods=("learned",)).outputs["learned"]
        if ESTIMATED_MAP_GUIDANCE in m.names:  # the estimated_guidance control's model on the local map
            res.outputs[ESTIMATED_MAP_GUIDANCE] = restore(
                sample.y, sample.kernel, sample.target, m.controls[ESTIMATED_GUIDANCE], m.denoiser, m.device,
                m.nominal_sigma, methods=("learned_estimated_map",)).outputs["learned_estimated_map"]
    else:
        controls = {n: m.controls[n] for n in m.names if n in CONTROL_METHODS}
        seed_free = None
        if m.shared is not None:  # computed by the first seed, reused by the others
            key = (sample.sample_id, sample_fingerprint(sample), tuple(m.names))
            seed_free = m.shared.get(key)
            if seed_free is None:
                seed_free = m.shared[key] = seed_free_outputs(m.task, sample.y, m.names)
        res = restore_task(m.task, sample.y, m.model, m.device, controls, sample.target, m.names, seed_free)
    res.outputs = {name: res.outputs[name] for name in m.names if name in res.outputs}
    return res


def score(outputs: dict[str, np.ndarray], x: np.ndarray, kernel_shape: tuple[int, int]) -> dict[str, dict[str, float]]:
    """``{method: {"psnr": .., "ssim": ..}}`` against ``x (C, H, W)``, kernel border cropped; for
    colour images also ``psnr_y``, ``ssim_y`` on the BT.601 luma (:func:`pipeline.metrics.luminance`)."""
    crop = kernel_crop(kernel_shape)
    gt = chw_to_hwc(x)
    out = {}
    for m, o in outputs.items():
        img = chw_to_hwc(o)
        out[m] = {"psnr": psnr(img, gt, crop), "ssim": ssim(img, gt, crop)}
        if gt.shape[-1] == 3:
            y, y_gt = luminance(img), luminance(gt)
            out[m].update(psnr_y=psnr(y, y_gt, crop), ssim_y=ssim(y, y_gt, crop))
    return out


def level_key(level: float) -> str:
    """``3.0 -> "3"``, ``2.55 -> "2.55"``: the noise-level keys of the metrics JSON."""
    return f"{level:g}"


def aggregate(rows: list[dict], noise_levels: list[float], methods: Sequence[str]) -> dict:
    """The metrics JSON from per-(sample, method) rows with keys ``method, noise_level, psnr, ssim,
    image, kernel_id``: per noise level and overall means (overall = mean of the per-level means,
    so every level weighs the same). With no ``noise_levels`` (rain, haze: rows without
    ``noise_level`` nor ``kernel_id``) the overall means are over all rows and the per-level
    tables are empty. A method with PSNRs at :data:`~pipeline.metrics.PSNR_CAP_DB` (an output equal
    to its clean image, whose PSNR is infinite) adds ``psnr_cap_db`` and ``psnr_capped``
    (``{method: [sample, ...]}``, the samples as :func:`row_sample` names them); absent otherwise."""
    result: dict = {"noise_levels": [float(l) if l != int(l) else int(l) for l in noise_levels], "methods": {}}
    # colour rows also carry the luma scores (score): their means too, as psnr_y_mean / ssim_y_mean
    metrics = ("psnr", "ssim", *(("psnr_y", "ssim_y") if rows and all("psnr_y" in r for r in rows) else ()))
    for m in methods:
        entry: dict = {"psnr": {}, "ssim": {}}
        for metric in metrics:
            per_level = []
            for level in noise_levels:
                vals = [r[metric] for r in rows if r["method"] == m and abs(float(r["noise_level"]) - level) < 1e-6]
                if vals:
                    entry.setdefault(metric, {})[level_key(level)] = float(np.mean(vals))
                    per_level.append(float(np.mean(vals)))
            if not noise_levels:  # rain, haze: no noise levels, the mean over every sample
                per_level = [float(np.mean(vals))] if (vals := [r[metric] for r in rows if r["method"] == m]) else []
            entry[f"{metric}_mean"] = float(np.mean(per_level)) if per_level else float("nan")
        result["methods"][m] = entry
    result["n_images"] = len({r["image"] for r in rows})
    if any("kernel_id" in r for r in rows):
        result["n_kernels"] = len({r["kernel_id"] for r in rows})
    capped = {m: sorted({row_sample(r) for r in rows if r["method"] == m and r["psnr"] >= PSNR_CAP_DB}) for m in methods}
    if any(capped.values()):
        result.update(psnr_cap_db=PSNR_CAP_DB, psnr_capped={m: v for m, v in capped.items() if v})
    return result


def best_output(candidates: Mapping[str, np.ndarray], sample: Sample) -> tuple[str, np.ndarray]:
    """The candidate ``(C, H, W)`` with the highest PSNR against ``sample.x`` under the protocol's
    crop, and its name (the first of equals): what a per-image oracle picks."""
    crop = kernel_crop(sample.kernel_shape)
    scores = {name: psnr(chw_to_hwc(out), chw_to_hwc(sample.x), crop) for name, out in candidates.items()}
    name = max(scores, key=lambda k: scores[k])
    return name, candidates[name]


def mean_psnr(metrics: dict) -> dict[str, float]:
    """``{method: overall mean PSNR}`` of an :func:`aggregate` result, to 0.01 dB (for a log line)."""
    return {m: round(v["psnr_mean"], 2) for m, v in metrics["methods"].items()}


def row_sample(row: dict) -> str:
    """The sample a score row is of: its ``sample_id`` or, without one, ``image`` (rain, haze) or
    ``<image>-<kernel_id>-<level>`` (deblurring, the benchmark's sample ids)."""
    if row.get("sample_id"):
        return row["sample_id"]
    if "kernel_id" not in row:
        return row["image"]
    return f"{row['image']}-{row['kernel_id']}-{level_key(float(row['noise_level']))}"


@dataclass
class Evaluation:
    """The protocol's tables.

    ``rows``: one per (sample, method): the sample's columns, ``method``, ``psnr``, ``ssim``.
    ``stage_rows``: one per (sample, stage) of the learned model: ``rho`` and the guidance's
    mean / std (x255). ``guidance_rows``: one per sample with a target: the proxy's estimate
    against the true map. ``metrics``: :func:`aggregate` (and ``task`` for rain and haze).
    ``mismatch_rows``: :func:`mismatch_rows` of each sample (with ``Methods.mismatch``);
    ``n_resumed``: how many samples came from :func:`evaluate`'s ``done`` instead of being run.
    """

    task: str
    methods: tuple[str, ...]
    levels: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    stage_rows: list[dict] = field(default_factory=list)
    guidance_rows: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    mismatch_rows: list[dict] = field(default_factory=list)
    n_resumed: int = 0

    @property
    def guidance_metrics(self) -> dict[str, float]:
        """The mean error of the proxy's map (deblurring: and of the classical noise estimate), x255."""
        g = self.guidance_rows
        if not g:
            return {}
        if self.task != "deblur":
            return {"guidance_mae": float(np.mean([r["mae"] for r in g]))}
        return {"guidance_mae_255": float(np.mean([r["mae_255"] for r in g])),
                "estimated_sigma_mae_255": float(np.mean([abs(r["estimated_sigma_255"] - r["noise_level"] * 2.55)
                                                          for r in g]))}

    @property
    def level_rows(self) -> list[dict]:
        """``noise_level, method, psnr``: the mean PSNR per level (``dvc plots``; empty for rain, haze)."""
        return [{"noise_level": lvl, "method": m, "psnr": self.metrics["methods"][m]["psnr"].get(level_key(lvl))}
                for lvl in self.levels for m in self.methods]


def sample_columns(sample: Sample, task: str, with_id: bool = True) -> dict:
    """The columns naming a sample in ``per_image.csv``: ``sample_id`` (``with_id``), ``image`` and,
    for deblurring, ``kernel_id`` and ``noise_level``."""
    cols = {"sample_id": sample.sample_id} if with_id else {}
    cols["image"] = sample.image
    if task == "deblur":
        cols.update(kernel_id=sample.record["kernel_id"], noise_level=sample.noise_level)
    return cols


def guidance_row(sample: Sample, res: Restoration, task: str) -> dict:
    """The proxy's map on one sample against the true guidance target."""
    target = sample.target[0]
    if task == "deblur":
        return {"noise_level": sample.noise_level, "mae_255": float(np.abs(res.guidance_estimate - target).mean()) * 255,
                "estimated_sigma_255": res.estimated_sigma * 255}
    return {"sample_id": sample.sample_id, "mae": float(np.abs(res.guidance_estimate - target).mean()),
            "true_mean": float(target.mean()), "estimate_mean": float(res.guidance_estimate.mean())}


def visual_arrays(sample: Sample, res: Restoration) -> dict[str, np.ndarray]:
    """What the report's visual grid reads of one sample (``visuals/<sample_id>.npz``)."""
    if sample.kernel is not None:
        truth = {"kernel": sample.kernel, "sigma_true": sample.target[0], "noise_estimate": res.guidance_estimate}
    elif sample.target is not None:
        truth = {"target_true": sample.target[0], "target_estimate": res.guidance_estimate}
    else:  # a real pair: no guidance truth to show beside the estimate
        truth = {"target_estimate": res.guidance_estimate}
    return {"ground_truth": sample.x, **truth, **{f"method__{m}": o for m, o in res.outputs.items()},
            **{f"guidance__{k + 1}": g for k, g in enumerate(res.guidance)}}


Extras = Callable[[Sample, Restoration], dict[str, np.ndarray] | None]


def sample_fingerprint(sample: Sample) -> str:
    """SHA-256 over a sample's arrays (observation, clean image, target, kernel): what its scores
    depend on beside the methods, so a journaled score is not reused for a changed input file."""
    digest = hashlib.sha256()
    for array in (sample.y, sample.x, sample.target, sample.kernel):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def score_sample(sample: Sample, methods: Methods, extras: Extras | None = None, with_id: bool = True,
                 seed: int | None = None) -> dict:
    """Run ``methods`` (and ``extras``, see :func:`evaluate`) on one sample and score every output:
    ``{"sample_id", "fingerprint", "rows", "stage_rows", "guidance_rows", "mismatch_rows"}``
    (:class:`Evaluation`'s rows of this sample), plain JSON-able values, so a caller can journal it
    and hand it back as ``done``; ``fingerprint``: :func:`sample_fingerprint`."""
    res = restore_sample(sample, methods)
    if extras is not None:
        res.outputs.update(extras(sample, res) or {})
    missing = [m for m in methods.names if m not in res.outputs]
    if missing:
        raise ValueError(f"{sample.sample_id}: no output for {missing}")
    seed_col = {"seed": seed} if seed is not None else {}
    cols = {**sample_columns(sample, methods.task, with_id), **seed_col}
    ordered = {m: res.outputs[m] for m in methods.names}
    level = {"noise_level": sample.noise_level} if methods.task == "deblur" else {}
    with_target = "learned" in methods.names and sample.target is not None
    told = methods.mismatch and abs(sample.noise_level - MISMATCH_TRUE) < 1e-9
    return {"sample_id": sample.sample_id, "fingerprint": sample_fingerprint(sample),
            "rows": [{**cols, "method": m, **sc} for m, sc in score(ordered, sample.x, sample.kernel_shape).items()],
            "stage_rows": [{"sample_id": sample.sample_id, **level, **seed_col,
                            "stage": k + 1, "rho": float(res.rhos[k]),
                            "guidance_mean_255": float(g.mean()) * 255, "guidance_std_255": float(g.std()) * 255}
                           for k, g in enumerate(res.guidance)],
            "guidance_rows": [guidance_row(sample, res, methods.task)] if with_target else [],
            "mismatch_rows": mismatch_rows(sample, methods, res.outputs.get("learned")) if told else []}


def evaluate(samples: Iterable[Sample], methods: Methods, extras: Extras | None = None,
             with_id: bool = True, done: Mapping[str, dict] | None = None,
             on_scored: Callable[[Sample, dict], None] | None = None, seed: int | None = None) -> Evaluation:
    """Run ``methods`` on every sample, score every output against the sample's clean image.

    ``extras(sample, restoration)`` is called once per sample after the methods ran: it may write
    what its caller keeps per sample (the evaluate stage's visuals) and returns the
    outputs of extra methods to score with the rest (the benchmark's oracle), or None.
    ``with_id``: a ``sample_id`` column in ``rows``. Samples are consumed one at a time.

    Resuming: ``done`` maps a ``sample_id`` to its :func:`score_sample` result from an earlier run
    (with the same settings); such a sample is not run, its rows are taken as they are, unless its
    data changed since (another :func:`sample_fingerprint`). Each sample
    that is run is handed to ``on_scored(sample, scored)`` as soon as it is scored (to journal it).
    Either way the tables are those of one uninterrupted run, rows in sample order. ``seed``: the
    training seed of ``methods``' models, a ``seed`` column of every row (:func:`merge_seeds`).
    """
    result = Evaluation(methods.task, methods.names)
    levels: set[float] = set()
    for sample in samples:
        scored = (done or {}).get(sample.sample_id)
        if scored is None or scored["fingerprint"] != sample_fingerprint(sample):
            scored = score_sample(sample, methods, extras, with_id, seed)
            if on_scored is not None:
                on_scored(sample, scored)
        else:
            result.n_resumed += 1
        result.rows += scored["rows"]
        result.stage_rows += scored["stage_rows"]
        result.guidance_rows += scored["guidance_rows"]
        result.mismatch_rows += scored["mismatch_rows"]
        if not math.isnan(sample.noise_level):
            levels.add(sample.noise_level)
    result.levels = sorted(levels)
    result.metrics = aggregate(result.rows, result.levels, methods.names)
    if methods.task != "deblur":
        result.metrics["task"] = methods.task
    return result


def headline_pairs(task: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons a claim rests on, among ``names`` (the methods that ran): ``learned``
    against every other method but the input (controls, baselines, bounds alike), then the pairs
    that split its gain: fine-tuning alone (``ircnn_estimated_ft`` vs ``ircnn_estimated``) and a
    classical level in place of none (``estimated_guidance`` vs ``no_guidance``) and a classical
    local map in place of that level (``estimated_map_guidance`` vs ``estimated_guidance``)."""
    pairs = [("learned", m) for m in names if m not in ("learned", "input")]
    if task != "deblur":
        pairs.append(("learned", "input"))
    pairs += [("ircnn_estimated_ft", "ircnn_estimated"), (ESTIMATED_GUIDANCE, NO_GUIDANCE),
              (ESTIMATED_MAP_GUIDANCE, ESTIMATED_GUIDANCE)]
    return [(a, b) for a, b in pairs if a in names and b in names]


def merge_seeds(results: Sequence[Evaluation]) -> Evaluation:
    """One :class:`Evaluation` of the same samples scored with each training seed's models (each
    from :func:`evaluate` with its ``seed``): rows of every seed, ``metrics`` the means over
    samples x seeds (:func:`aggregate`) with, per method, the spread over seeds
    (``psnr_std_seeds``, ``ssim_std_seeds``: the std of the per-seed means, None with one seed)
    and the top-level ``seeds``, ``ci_method``, ``ci_seeds_method`` and ``comparisons``
    (:func:`pipeline.stats.comparisons` over :func:`headline_pairs`, paired on (sample, seed), with
    the interval over seeds ``ci95_seeds``)."""
    first = results[0]
    merged = Evaluation(first.task, first.methods, first.levels, n_resumed=sum(r.n_resumed for r in results))
    for r in results:
        merged.rows += r.rows
        merged.stage_rows += r.stage_rows
        merged.guidance_rows += r.guidance_rows
        merged.mismatch_rows += r.mismatch_rows
    metrics = aggregate(merged.rows, merged.levels, merged.methods)
    spread = {metric: stats.seed_spread(merged.rows, merged.methods, metric) for metric in ("psnr", "ssim")}
    for m, entry in metrics["methods"].items():
        for metric in ("psnr", "ssim"):
            entry[f"{metric}_std_seeds"] = spread[metric].get(m, {}).get("std")
    seeds = sorted({r["seed"] for r in merged.rows})
    metrics.update(seeds=seeds, ci_method=stats.CI_METHOD, ci_seeds_method=stats.CI_SEEDS_METHOD,
                   comparisons=stats.comparisons(merged.rows, headline_pairs(first.task, merged.methods), "psnr",
                                                 merged.levels))
    if first.task != "deblur":
        metrics["task"] = first.task
    merged.metrics = metrics
    return merged


def evaluate_learned(model: torch.nn.Module, samples: Iterable[Sample], device: torch.device,
                     task: str = "deblur") -> Evaluation:
    """The learned model alone on ``samples`` (a sweep trial's validation score):
    ``metrics["methods"]["learned"]`` holds its per-level and overall PSNR / SSIM, ``rows`` the
    per-sample scores, ``stage_rows`` its ``rho_k`` and guidance per stage."""
    return evaluate(samples, Methods(task, ("learned",), model, device))


# -- the benchmark's tables -------------------------------------------------------------------
MISMATCH_TRUE = 3.0  # percent: the true level of the mismatch table
MISMATCH_TOLD = (1, 2, 3, 4, 5)
MISMATCH_METHODS = ("ircnn_true", "dpir_true", "optuna_per_noise", "learned")


def mismatch_rows(sample: Sample, methods: Methods, learned: np.ndarray | None) -> list[dict]:
    """The non-blind methods on ``sample`` when told each level of :data:`MISMATCH_TOLD` instead of
    the truth: rows ``image, kernel_id, told, method, psnr``. ``learned`` is blind (told nothing),
    so its one output serves every row."""
    told_methods = tuple(m for m in MISMATCH_METHODS if m in methods.names and m != "learned")
    rows = []
    for told in MISMATCH_TOLD:
        told_sample = replace(sample, target=np.full_like(sample.target, told / 100.0))
        outputs = restore_sample(told_sample, replace(methods, names=told_methods)).outputs
        if learned is not None:
            outputs["learned"] = learned
        rows += [{"image": sample.image, "kernel_id": sample.record["kernel_id"], "told": told, "method": m,
                  "psnr": sc["psnr"]} for m, sc in score(outputs, sample.x, sample.kernel_shape).items()]
    return rows


def mismatch_table(rows: list[dict]) -> dict:
    """``mismatch.json``: the mean PSNR per (method, told level) of :func:`mismatch_rows`' rows."""
    present = [m for m in MISMATCH_METHODS if any(r["method"] == m for r in rows)]
    table = {m: {str(t): float(np.mean([r["psnr"] for r in rows if r["method"] == m and r["told"] == t]))
                 for t in MISMATCH_TOLD} for m in present}
    return {"true_noise": int(MISMATCH_TRUE), "told": list(MISMATCH_TOLD), "psnr": table}


def mismatch_markdown(table: dict) -> str:
    psnr_table = table["psnr"]
    lines = ["| told (%) | " + " | ".join(psnr_table) + " |", "|---" * (len(psnr_table) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(f"{psnr_table[m][str(t)]:.2f}" for m in psnr_table) + " |" for t in table["told"]]
    return f"True noise {table['true_noise']} %; mean PSNR (dB) when told another level\n\n" + "\n".join(lines) + "\n"


def markdown_table(metrics: dict, methods: Sequence[str], summary: dict | None = None) -> str:
    """``table.md``: mean PSNR / SSIM per noise level (if any) and overall, one column per method;
    with a :func:`gap_summary`, a last line on the share of the oracle's gap ``learned`` closes."""
    levels = [level_key(l) for l in metrics["noise_levels"]]
    lines = [f"| {'noise (%)' if levels else ''} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for lvl in levels:
        cells = [f"{metrics['methods'][m]['psnr'].get(lvl, float('nan')):.2f} / {metrics['methods'][m]['ssim'].get(lvl, float('nan')):.3f}"
                 for m in methods]
        lines.append(f"| {lvl} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{metrics['methods'][m]['psnr_mean']:.2f} / {metrics['methods'][m]['ssim_mean']:.3f}"
                                           for m in methods) + " |")
    text = "\n".join(lines) + "\n"
    if summary and summary["psnr"]["gap_closed"] is not None:
        text += (f"\nlearned closes {100 * summary['psnr']['gap_closed']:.0f} % of the optuna_global -> {ORACLE} gap "
                 f"({summary['psnr']['gap_db']:.2f} dB)\n")
    return text


def gap_summary(metrics: dict) -> dict:
    """How much of the ``optuna_global`` -> ``oracle_per_image`` gap (mean PSNR) ``learned`` closes,
    overall and per noise level (1.0 = reaches the per-image oracle; above 1 = beyond it)."""
    m = metrics["methods"]
    if not all(k in m for k in ("learned", "optuna_global", ORACLE)):
        return {}

    def closed(level: str | None) -> dict:
        get = (lambda name: m[name]["psnr_mean"]) if level is None else (lambda name: m[name]["psnr"][level])
        lo, hi, ours = get("optuna_global"), get(ORACLE), get("learned")
        return {"optuna_global": lo, ORACLE: hi, "learned": ours,
                "gap_db": hi - lo, "gap_closed": (ours - lo) / (hi - lo) if hi - lo > 1e-9 else None}

    return {"psnr": closed(None), "per_noise": {lvl: closed(lvl) for lvl in m["learned"]["psnr"] if lvl in m[ORACLE]["psnr"]}}


def benchmark_tables(result: Evaluation, source: str) -> tuple[dict, str, dict]:
    """The benchmark's tables beside ``result.metrics`` and ``rows``: :func:`gap_summary` ({} unless
    its three methods ran), ``table.md``'s text (:func:`markdown_table` under a title naming
    ``source``: deblurring's noise mode, or the folder of pairs) and :func:`mismatch_table` ({}
    without mismatch rows)."""
    m, summary = result.metrics, gap_summary(result.metrics)
    title = (f"Mean PSNR (dB) / SSIM over {m['n_images']} images x {m['n_kernels']} kernels, noise {source}"
             if result.task == "deblur" else
             f"{result.task}: mean PSNR (dB) / SSIM over {m['n_images']} pairs of {source}")
    mismatch = mismatch_table(result.mismatch_rows) if result.mismatch_rows else {}
    return summary, f"{title}\n\n" + markdown_table(m, result.methods, summary), mismatch
