"""What every stage does at its edge: parse argv, load and validate params, set up logging."""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from pipeline.config import CONTROLS, TASKS, ConfigError, Params, params_from_dict
from pipeline.io import InputError

log = logging.getLogger("hyperguide")


def read_yaml(path: Path, what: str):
    """The YAML document at ``path``; ConfigError naming the file when it is missing or not YAML."""
    if not path.exists():
        raise ConfigError(f"{path}: no such {what}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_params(path: str | Path, task: str | None = None) -> Params:
    """Read and validate a params file, resolved for ``task`` (default: its ``base.task``; the
    ``tasks.<task>`` overrides merged on); every error names the file and the key."""
    path = Path(path)
    data = read_yaml(path, "params file")
    try:
        return params_from_dict(data, task)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class TaskPaths:
    """Where the stages of one task read and write, relative to the project root: the layout of
    ``dvc.yaml`` (one folder per task, so the tasks run side by side; one sub-folder per training
    seed of ``base.seeds``, so the seeds do too)::

        models/<task>/seed-<seed>/model.pt            the learned model of one seed
        models/<task>/seed-<seed>/<control>/model.pt  its controls (no_guidance, estimated_guidance, direct_cnn)
        tuned/<task>/seed-<seed>.yaml                 the tune stage's winners with that seed's denoiser
        results/<task>/                               evaluate: every seed, scored together
    """

    task: str
    seed: int = 0
    variant_name: str = ""  # a control of the task (``no_guidance``, ...): its own models and checkpoints

    def variant(self, guidance: str) -> "TaskPaths":
        """The paths of the task's model trained with ``guidance`` (``none``: the ``no_guidance``
        control, ``models/<task>/seed-<seed>/no_guidance``)."""
        names = {"learned": "", **{mode: control for control, mode in CONTROLS.items()}}
        return TaskPaths(self.task, self.seed, names.get(guidance, guidance))

    @property
    def prepared(self) -> Path:
        return Path("data") / self.task / "prepared"

    @property
    def degraded(self) -> Path:
        return Path("data") / self.task / "degraded"

    @property
    def models_root(self) -> Path:
        """The task's models, every seed (what ``evaluate`` reads)."""
        return Path("models") / self.task

    @property
    def models(self) -> Path:
        folder = self.models_root / f"seed-{self.seed}"
        return folder / self.variant_name if self.variant_name else folder

    @property
    def model(self) -> Path:
        return self.models / "model.pt"

    @property
    def checkpoint(self) -> Path:
        folder = f"seed-{self.seed}-{self.variant_name}" if self.variant_name else f"seed-{self.seed}"
        return Path("checkpoints") / self.task / folder / "train.pt"

    @property
    def tuned_root(self) -> Path:
        """The task's tuned schedules, every seed (what ``evaluate`` reads)."""
        return Path("tuned") / self.task

    @property
    def tuned(self) -> Path:
        return self.tuned_root / f"seed-{self.seed}.yaml"

    @property
    def results(self) -> Path:
        return Path("results") / self.task


def seed_folder(root: str | Path, seed: int) -> Path:
    """``<root>/seed-<seed>``: one training seed's models under a task's ``models/<task>``."""
    return Path(root) / f"seed-{seed}"


def fill_paths(args: argparse.Namespace, task: str, seed: int = 0, **defaults: str) -> None:
    """Set every ``args.<name>`` still ``None`` to the :class:`TaskPaths` attribute ``defaults[name]``
    (of training seed ``seed``)."""
    paths = TaskPaths(task, seed)
    for name, attr in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, str(getattr(paths, attr)))


def parser(description: str, data: bool = False) -> argparse.ArgumentParser:
    """The options every stage takes; ``data``: also ``--prepared`` and ``--degraded``, the task's
    prepared and degraded splits (filled in by :func:`fill_paths`)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (validated; unknown keys are errors)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="the task (default: the params file's base.task); its tasks.<task> overrides apply")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if data:
        p.add_argument("--prepared", default=None, help="default data/<task>/prepared")
        p.add_argument("--degraded", default=None, help="default data/<task>/degraded")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def interrupt(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the stage unwinds, so its MLflow run ends KILLED and temporaries go."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def exit_with_parent() -> None:
    """Under DVC (``DVC_STAGE`` is set), get SIGTERM when ``dvc repro`` dies, even by ``kill -9``:
    DVC runs the command as its direct child, and an orphaned stage would go on writing outputs
    (a tune kept adding trials) that no lock file will record. Linux only (``prctl``); a stage
    run by hand is left alone (``nohup`` must keep working)."""
    if not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise KeyboardInterrupt("dvc exited before the stage started")


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a bad input or config ends with one clear line and exit code 2;
    SIGTERM (and, under DVC, the death of ``dvc repro``) interrupts it like Ctrl-C (exit 130)."""
    setup_logging()
    signal.signal(signal.SIGTERM, interrupt)
    try:
        exit_with_parent()
        main()
    except KeyboardInterrupt as exc:
        log.error("interrupted (%s): stopped; a re-run resumes from the last checkpoint", exc or "Ctrl-C")
        sys.exit(130)
    except (ConfigError, InputError) as exc:
        log.error("%s", exc)
        sys.exit(2)
