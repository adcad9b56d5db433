"""Typed, validated configuration: one frozen dataclass per ``params.yaml`` section.

Config enters the program once, at the edge (:func:`params_from_dict`); everything downstream
receives these objects. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the dotted key (``train.lr``), with a suggestion for typos.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A params file that cannot be turned into a valid configuration."""


TASKS = ("deblur", "derain", "dehaze")
# The controls `dvc repro` trains beside the learned model (stage `ablate`), as method name ->
# the `model.guidance` they are trained with: the same model and training, only the guidance differs;
# except `direct_cnn` (guidance `direct`) replaces the whole unfolded model by a plain residual CNN of the same
# parameter count, trained on the same data for the same steps: whether the structure matters at all.
CONTROLS = {"no_guidance": "none", "estimated_guidance": "estimated", "direct_cnn": "direct"}
Task = Literal["deblur", "derain", "dehaze"]


@dataclass(frozen=True)
class BaseConfig:
    # Seeds. `split_seed`: the data (which image goes to which split, every degradation drawn
    # for val/test), fixed across training seeds so every seed is scored on the same samples.
    # `seeds`: the training seeds `dvc repro` runs (model init, training stream, tuning), each a
    # full set of trained methods; `seed`: the training seed of a command run by hand.
    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    split_seed: int = 0
    # deblur (grey by default) | derain | dehaze (colour tasks: prepare keeps colour for them).
    # Under `dvc repro` every stage is told its task (`--task`, from `tasks.run`); this is the
    # task of a command run by hand without `--task`.
    task: Task = "deblur"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "base.threads", "must be >= 0")
        _check(len(self.seeds) >= 1, "base.seeds", "must name at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), "base.seeds", f"names a seed twice: {list(self.seeds)}")
        _check(all(s >= 0 for s in (*self.seeds, self.seed, self.split_seed)), "base.seed/seeds/split_seed",
               "must be >= 0")


@dataclass(frozen=True)
class SplitConfig:
    test: int = 4
    val: int = 2

    def __post_init__(self) -> None:
        _check(self.test >= 1, "prepare.split.test", "must be >= 1")
        _check(self.val >= 0, "prepare.split.val", "must be >= 0")


@dataclass(frozen=True)
class PrepareConfig:
    source: Literal["skimage", "folder", "pairs"] = "skimage"
    # skimage: names of images in ``skimage.data``; folder: paths of image folders; pairs (rain and
    # haze): folders of real pairs, rain/ + norain/ or hazy/ + clear/ (Rain100H's names), trained on as they are.
    images: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    color: bool = False
    max_side: int = 160  # longer side after downscaling (0 keeps the original size)
    split: SplitConfig = field(default_factory=SplitConfig)
    # Always put in the test split (never trained on): e.g. images that also sit in a benchmark.
    holdout: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.max_side == 0 or self.max_side >= 32, "prepare.max_side", "must be 0 or >= 32")
        if self.source in ("folder", "pairs"):
            _check(len(self.folders) > 0, "prepare.folders", f"source '{self.source}' needs at least one folder")


@dataclass(frozen=True)
class KernelConfig:
    source: Literal["generated", "file"] = "generated"
    file: str = ""  # .mat (v5 / v7.3, a 'kernels' cell array), .npy, .npz, an image or a folder of images
    motion_fraction: float = 0.6  # share of motion kernels among generated ones (rest: Gaussian)
    max_size: int = 25
    per_image: int = 2  # kernels per test image
    # kernels per validation image: more degraded draws to tune the baselines on (and to make
    # design choices on) than the test split has, from the same generator
    val_per_image: int = 4

    def __post_init__(self) -> None:
        _check(0.0 <= self.motion_fraction <= 1.0, "degrade.kernels.motion_fraction", "must be in [0, 1]")
        _check(self.max_size >= 3 and self.max_size % 2 == 1, "degrade.kernels.max_size", "must be odd and >= 3")
        _check(self.per_image >= 1, "degrade.kernels.per_image", "must be >= 1")
        _check(self.val_per_image >= 1, "degrade.kernels.val_per_image", "must be >= 1")
        if self.source == "file":
            _check(bool(self.file), "degrade.kernels.file", "source 'file' needs a kernel file")


@dataclass(frozen=True)
class NoiseConfig:
    mode: Literal["constant", "varying"] = "constant"
    range: tuple[float, float] = (1.0, 7.0)  # percent of the dynamic range, drawn uniformly
    test_levels: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0)  # percent; the evaluation grid
    # varying mode: the map's spread around its level, as a fraction of it (0.8 -> 0.2x to 1.8x)
    spread: float = 0.8

    def __post_init__(self) -> None:
        lo, hi = self.range
        _check(0.0 <= lo <= hi <= 50.0, "degrade.noise.range", "must satisfy 0 <= low <= high <= 50")
        _check(all(0.0 <= s <= 50.0 for s in self.test_levels), "degrade.noise.test_levels", "must be in [0, 50]")
        _check(0.0 <= self.spread < 1.0, "degrade.noise.spread", "must be in [0, 1)")


def _check_range(pair: tuple[float, float], lo: float, hi: float, key: str) -> None:
    _check(lo <= pair[0] <= pair[1] <= hi, key, f"must satisfy {lo:g} <= low <= high <= {hi:g}")


@dataclass(frozen=True)
class RainConfig:
    """Rain synthesis (task derain): streak parameters drawn uniformly from these ranges."""

    per_image: int = 2  # rainy samples per val/test image
    density: tuple[float, float] = (0.001, 0.006)  # streak centres per pixel
    length: tuple[float, float] = (0.04, 0.15)  # fraction of the longer side
    brightness: tuple[float, float] = (0.25, 0.8)
    heavy: bool = False  # an atmospheric veil as well (y = a (x + r) + (1 - a) A)
    # heavy (the default): Rain100H's kind, a preset of its own (2-4 long semi-transparent layers
    # at different angles and a veil: pipeline.generators.rain.HEAVY), the ranges above unused;
    # light: one streak layer drawn from the ranges above
    style: str = "heavy"

    def __post_init__(self) -> None:
        _check(self.per_image >= 1, "degrade.rain.per_image", "must be >= 1")
        _check(self.style in ("light", "heavy"), "degrade.rain.style", f"must be light or heavy, got {self.style!r}")
        _check_range(self.density, 1e-5, 0.1, "degrade.rain.density")
        _check_range(self.length, 0.005, 1.0, "degrade.rain.length")
        _check_range(self.brightness, 0.01, 1.0, "degrade.rain.brightness")


@dataclass(frozen=True)
class HazeConfig:
    """Haze synthesis (task dehaze): ``y = x t + A (1 - t)``, ``t = exp(-beta d)``."""

    per_image: int = 2  # hazy samples per val/test image
    beta: tuple[float, float] = (0.6, 1.8)
    airlight: tuple[float, float] = (0.7, 1.0)
    # a folder of depth maps named like the images (any image format; larger = farther);
    # "" uses the proxy (a smooth random field plus a vertical gradient) for every image
    depth_folder: str = ""

    def __post_init__(self) -> None:
        _check(self.per_image >= 1, "degrade.haze.per_image", "must be >= 1")
        _check_range(self.beta, 0.0, 10.0, "degrade.haze.beta")
        _check_range(self.airlight, 0.05, 1.0, "degrade.haze.airlight")


@dataclass(frozen=True)
class DegradeConfig:
    kernels: KernelConfig = field(default_factory=KernelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    rain: RainConfig = field(default_factory=RainConfig)
    haze: HazeConfig = field(default_factory=HazeConfig)


@dataclass(frozen=True)
class ModelConfig:
    stages: int = 5
    denoiser_width: int = 32
    denoiser_dilations: tuple[int, ...] = (1, 2, 3, 4, 3, 2, 1)
    proxy_width: int = 32
    proxy_dilations: tuple[int, ...] = (1, 2, 4, 1)
    # rho_k follows the IRCNN rule with this nominal noise level (percent), as the reference code.
    nominal_sigma: float = 1.0
    sigma_start: float = 49.0  # /255, first stage of the rho schedule
    # learned (the proxy) | none (the nominal schedule: a control) | estimated (a classical
    # per-image estimate in place of the proxy's map: a control) | oracle (the true map: a bound) |
    # direct (no unfolding: pipeline.models.direct's plain CNN of the same parameter count, a control)
    guidance: Literal["learned", "none", "estimated", "oracle", "direct"] = "learned"
    # rho_k on the IRCNN rule at the proxy's noise estimate (beyond the paper) or at nominal_sigma
    # predicted: the estimated rule times a per-image, per-stage factor from a head on the proxy's
    # map (the proxy also predicting rho_k: beyond the paper)
    rho: Literal["estimated", "nominal", "predicted"] = "estimated"
    learn_rho: bool = False  # beyond the paper: a trainable per-stage gain on rho_k
    # proxy variants (ablation): a per-pixel map or one scalar per image and stage; the proxy
    # applied once to the observation (the map decays through the stages), one proxy shared by
    # all stages applied to each stage input, or one proxy per stage
    proxy_output: Literal["map", "scalar"] = "map"
    proxy_sharing: Literal["once", "shared", "per_stage"] = "once"

    def __post_init__(self) -> None:
        _check(1 <= self.stages <= 50, "model.stages", "must be in [1, 50]")
        _check(self.denoiser_width >= 4, "model.denoiser_width", "must be >= 4")
        _check(len(self.denoiser_dilations) >= 2, "model.denoiser_dilations", "needs >= 2 layers")
        _check(all(d >= 1 for d in self.denoiser_dilations), "model.denoiser_dilations", "must be >= 1")
        _check(self.proxy_width >= 4, "model.proxy_width", "must be >= 4")
        _check(len(self.proxy_dilations) >= 2, "model.proxy_dilations", "needs >= 2 layers")
        _check(all(d >= 1 for d in self.proxy_dilations), "model.proxy_dilations", "must be >= 1")
        _check(0.0 < self.nominal_sigma <= 50.0, "model.nominal_sigma", "must be in (0, 50]")
        _check(0.0 < self.sigma_start <= 255.0, "model.sigma_start", "must be in (0, 255]")


@dataclass(frozen=True)
class TrainConfig:
    strategy: Literal["alternating", "joint", "unrolled", "implicit"] = "alternating"
    # unrolled: T differentiated inner SGD steps; implicit: T inner Adam steps before the IFT
    inner_steps: int = 1
    inner_lr: float = 0.1  # step of the differentiated inner SGD steps (unrolled)
    implicit_method: Literal["neumann", "cg"] = "neumann"
    implicit_iterations: int = 3  # Neumann terms / CG iterations
    implicit_alpha: float = 0.1  # Neumann step (needs alpha < 2 / lambda_max of the inner Hessian)
    implicit_damping: float = 1e-3  # added to the inner Hessian (CG and Neumann): keeps it invertible
    num_workers: int = 1  # > 1: data-parallel under Ray Train's TorchTrainer (the global batch is split)
    pretrain_steps: int = 600
    pretrain_sigma_max: float = 50.0  # /255, the denoiser must cover the PnP schedules' range
    steps: int = 600
    batch_size: int = 8
    patch_size: int = 64
    lr: float = 1e-3
    lr_inner: float = 1e-3
    guidance_weight: float = 100.0
    train_kernels: int = 400  # size of the seeded kernel bank drawn from for training patches
    checkpoint_every: int = 100
    log_every: int = 20
    max_nonfinite: int = 3  # consecutive non-finite losses tolerated (skipped) before stopping
    val_samples: int = 4  # validation samples for the training curve (an evenly spread subset)
    # recompute each unrolled stage's activations in the backward pass instead of keeping them:
    # training memory nearly flat in model.stages, for about one more forward pass of compute
    activation_checkpointing: bool = False
    # mixed precision of the networks (the FFT data steps stay float32): auto = bf16 on CUDA, none
    # on CPU; bf16 / fp16 anywhere (fp16 with a loss scaler); off = float32 everywhere
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    # patch synthesis in N worker processes ahead of the training loop (a GPU must not wait for
    # it); 0 = in the training process, from the run's one stream. N > 0 draws other batches
    # (each from a seed of its own), the same for every N (pipeline/batches.py)
    data_workers: int = 0

    def __post_init__(self) -> None:
        for key in ("pretrain_steps", "steps"):
            _check(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        for key in ("batch_size", "checkpoint_every", "log_every", "train_kernels", "max_nonfinite", "val_samples"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        _check(self.patch_size >= 32, "train.patch_size", "must be >= 32")
        _check(self.lr > 0 and self.lr_inner > 0, "train.lr", "learning rates must be > 0")
        _check(self.guidance_weight >= 0, "train.guidance_weight", "must be >= 0")
        _check(0 < self.pretrain_sigma_max <= 255, "train.pretrain_sigma_max", "must be in (0, 255]")
        _check(1 <= self.inner_steps <= 100, "train.inner_steps", "must be in [1, 100]")
        _check(self.inner_lr > 0, "train.inner_lr", "must be > 0")
        _check(1 <= self.implicit_iterations <= 1000, "train.implicit_iterations", "must be in [1, 1000]")
        _check(self.implicit_alpha > 0, "train.implicit_alpha", "must be > 0")
        _check(self.implicit_damping >= 0, "train.implicit_damping", "must be >= 0")
        _check(1 <= self.num_workers <= 1024, "train.num_workers", "must be in [1, 1024]")
        _check(self.batch_size % self.num_workers == 0, "train.batch_size",
               f"must be a multiple of train.num_workers ({self.num_workers}): each worker takes an equal share")
        _check(self.num_workers == 1 or self.strategy in ("alternating", "joint"), "train.num_workers",
               "> 1 only with the first-order strategies (alternating, joint): the unrolled inner steps are per worker")
        _check(0 <= self.data_workers <= 256, "train.data_workers", "must be in [0, 256]")
        _check(self.amp != "fp16" or self.strategy in ("alternating", "joint"), "train.amp",
               "fp16 only with the first-order strategies (alternating, joint): the loss scaler does not reach the "
               "differentiated inner steps of unrolled/implicit; use bf16")


@dataclass(frozen=True)
class TuneConfig:
    """Optuna searches for the hand-set baselines, on the validation split."""

    storage: str = "sqlite:///optuna.db"  # any SQLAlchemy URL
    # The compute the searches may spend, in process CPU-seconds (every thread): 0 = what the
    # learned model's training spent (its train.json `cpu_seconds`), the equal budget; split
    # 1/3 global schedule, 1/2 over the per-level schedules, 1/6 over the classical knobs.
    budget_cpu_seconds: float = 0.0
    max_trials: int = 500  # per search, a cap beside the budget
    max_samples: int = 8  # validation samples per search (a seeded subset)
    max_iterations: int = 30  # upper bound of the searched K

    def __post_init__(self) -> None:
        _check(self.budget_cpu_seconds >= 0, "tune.budget_cpu_seconds", "must be >= 0 (0: the training's)")
        _check(self.max_trials >= 2, "tune.max_trials", "must be >= 2 (the two rules are tried first)")
        _check(self.max_samples >= 1, "tune.max_samples", "must be >= 1")
        _check(self.max_iterations >= 4, "tune.max_iterations", "must be >= 4")
        _check("://" in self.storage, "tune.storage", "must be a database URL such as sqlite:///optuna.db")


@dataclass(frozen=True)
class EvaluateConfig:
    ircnn_iters: int = 30
    dpir_iters: int = 8
    nominal_sigma: float = 1.0  # percent: what the blind baselines are told
    n_visuals: int = 3  # samples kept for the report's visual grid
    # rain / haze: a folder of real degraded photos without ground truth; evaluate restores them
    # (learned and classical) and the report shows them side by side
    real_folder: str = ""
    real_max_side: int = 320  # real photos are downscaled so the longer side is at most this

    def __post_init__(self) -> None:
        _check(self.real_max_side >= 32, "evaluate.real_max_side", "must be >= 32")
        _check(self.ircnn_iters >= 1 and self.dpir_iters >= 1, "evaluate.ircnn_iters", "must be >= 1")
        _check(0 < self.nominal_sigma <= 50, "evaluate.nominal_sigma", "must be in (0, 50]")
        _check(self.n_visuals >= 0, "evaluate.n_visuals", "must be >= 0")


@dataclass(frozen=True)
class ReportConfig:
    title: str = "hyperguide: learned hyper-guidance for deblurring"
    visual_methods: tuple[str, ...] = ("ircnn_estimated", "optuna_per_noise", "learned")


@dataclass(frozen=True)
class TasksConfig:
    """``tasks.run``: the tasks one ``dvc repro`` produces side by side (DVC ``matrix``);
    ``tasks.controls``: the controls (:data:`CONTROLS`) ``dvc repro`` trains for every task and
    seed beside the learned model (stage ``ablate``: the same model and training, only
    ``model.guidance`` differs) and evaluates under their names. The per-task overrides (``tasks.<task>``) are merged onto the sections when
    the params are resolved for a task (:func:`params_from_dict`), so they are not kept here."""

    run: tuple[Task, ...] = TASKS
    controls: tuple[str, ...] = tuple(CONTROLS)

    def __post_init__(self) -> None:
        _check(len(self.run) >= 1, "tasks.run", "must name at least one task")
        _check(len(set(self.run)) == len(self.run), "tasks.run", f"names a task twice: {list(self.run)}")
        _check(len(set(self.controls)) == len(self.controls), "tasks.controls",
               f"names a control twice: {list(self.controls)}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        _check(not unknown, "tasks.controls", f"unknown {unknown}; known: {', '.join(CONTROLS)}")


@dataclass(frozen=True)
class Params:
    base: BaseConfig = field(default_factory=BaseConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)

    def __post_init__(self) -> None:
        if self.prepare.source == "pairs":
            # real pairs carry no guidance truth: the proxy learns from the outer loss alone, which
            # the first-order strategies give it (unrolled / implicit move it by the inner loss only)
            _check(self.base.task != "deblur", "prepare.source",
                   "'pairs' is for derain and dehaze (a real blurred photo has no known kernel): set it under "
                   "tasks.derain.prepare or tasks.dehaze.prepare")
            _check(self.model.guidance != "oracle", "model.guidance",
                   "'oracle' needs the true guidance map, which real pairs do not have (prepare.source: pairs)")
            _check(self.train.strategy in ("alternating", "joint"), "train.strategy",
                   f"{self.train.strategy!r} trains the proxy by its guidance loss alone, which real pairs cannot "
                   "give (prepare.source: pairs): use alternating or joint")
        if self.base.task == "deblur":
            _check(not self.evaluate.real_folder, "evaluate.real_folder",
                   "rain and haze only (a real blurred photo has no known kernel): set it under tasks.derain or "
                   "tasks.dehaze")
            return
        # the rain and haze models (pipeline.models.task_models) have one proxy on the
        # observation, a per-pixel map and learned rho_k: the deblurring model's variants do not apply
        task, m = self.base.task, self.model
        for key, value, default in (("proxy_sharing", m.proxy_sharing, "once"), ("proxy_output", m.proxy_output, "map"),
                                    ("rho", m.rho, "estimated"), ("learn_rho", m.learn_rho, False)):
            _check(value == default, f"model.{key}", f"only {default!r} for task {task} (a deblurring variant)")
        _check(self.train.num_workers == 1, "train.num_workers", f"must be 1 for task {task}")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def params_from_dict(data: dict[str, Any] | None, task: str | None = None) -> Params:
    """Build :class:`Params` for ``task`` (default: ``base.task``) from a parsed ``params.yaml``;
    missing keys take their defaults.

    ``tasks.<task>`` (a mapping shaped like the file's sections) is deep-merged onto the sections
    for that task. The params of every task of ``tasks.run`` (and of ``task``) are built and
    validated, whichever task is asked for, so a typo in any of their overrides fails every stage
    at once, naming the task; the overrides of the other tasks are only checked to be mappings.
    """
    data = dict(data or {})
    if not isinstance(data.get("tasks", {}), dict):
        raise ConfigError(f"tasks: expected a mapping, got {type(data['tasks']).__name__}")
    tasks = dict(data.pop("tasks", None) or {})
    for key in tasks:
        if key not in ("run", "controls", *TASKS):
            close = difflib.get_close_matches(str(key), ["run", "controls", *TASKS], n=1)
            raise ConfigError(f"unknown key 'tasks.{key}'" + (f"; did you mean '{close[0]}'?" if close else
                                                                f"; known keys: run, controls, {', '.join(TASKS)}"))
    overrides = {t: tasks.get(t) or {} for t in TASKS}
    for t, over in overrides.items():
        if not isinstance(over, dict):
            raise ConfigError(f"tasks.{t}: expected a mapping of overrides, got {type(over).__name__}")
        if "tasks" in over or "task" in (over.get("base") or {}):
            raise ConfigError(f"tasks.{t}: may not set 'tasks' or 'base.task' (the task is the key)")
    run = {k: tasks[k] for k in ("run", "controls") if k in tasks}
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"base: expected a mapping, got {type(base).__name__}")
    chosen = task if task is not None else base.get("task", "deblur")
    listed = tasks["run"] if isinstance(tasks.get("run"), list) else list(TASKS)
    resolved = None
    for t in dict.fromkeys([chosen, *listed]):
        if t not in TASKS:
            close = difflib.get_close_matches(str(t), TASKS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            where = "base.task" if t == chosen and task is None else "task" if t == chosen else "tasks.run"
            raise ConfigError(f"{where}: {t!r} is not one of {list(TASKS)}{hint}")
        merged = merge(data, overrides[t])
        merged["base"] = {**(merged.get("base") or {}), "task": t}
        try:
            params = from_dict(Params, {**merged, "tasks": run}, "")
        except ConfigError as exc:
            raise ConfigError(f"{exc} (task {t}, with tasks.{t} merged onto the sections)" if overrides[t] else
                              str(exc)) from exc
        if t == chosen:
            resolved = params
    return resolved


def pin_task(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a parsed ``params.yaml``) with ``tasks.run`` set to its ``base.task`` alone: for
    runs of one task (a sweep's trials), whose settings need not suit the other tasks."""
    tasks = data.get("tasks") if isinstance(data.get("tasks"), dict) else {}
    base = data.get("base") if isinstance(data.get("base"), dict) else {}
    return {**data, "tasks": {**tasks, "run": [base.get("task", "deblur")]}}


def from_dict(cls: type, data: Any, path: str) -> Any:
    """Convert a mapping to the frozen dataclass ``cls``, recursively, rejecting unknown keys."""
    where = path or "params"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{_join(path, key)}'{hint}")
    kwargs = {k: _convert(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """The inverse of :func:`from_dict`: plain dicts, lists and scalars (YAML/JSON-ready)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}`` from a config object or nested dict: the shape trackers want."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(obj) if dataclasses.is_dataclass(obj) else obj).items():
        name = _join(prefix, key)
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{path}: {value!r} is not one of {list(allowed)}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1])
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - programming error


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` onto ``base`` (mappings merged key by key, anything else replaced)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
