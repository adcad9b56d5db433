"""DVC stage ``validate``: check ``params.yaml`` before any stage that has outputs to lose runs.

    python -m stages.validate --params params.yaml --out data/params.ok

DVC deletes a stage's outputs just before it runs the stage's command, so a typo that the stage
itself would refuse (an unknown key, a value out of range) used to cost its outputs, some of
which (``history.csv``, ``train.json``) are not cached and cannot be checked out again. Every
stage depends on this one, which depends on the whole params file: after any edit DVC runs it
first, and a refusal stops ``dvc repro`` with every output still in place. Its output never
changes (a fixed line), so a valid edit re-runs only the stages whose own params changed.

It also checks what only DVC needs: each stage depends on its own sections of its own task's
overrides (``tasks.<task>.train``, ...; see ``dvc.yaml``), and DVC refuses a declared param that is
absent, so every task of ``tasks.run`` names each of :data:`TASK_SECTIONS` (``{}`` for none).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import io
from pipeline.config import ConfigError
from stages.common import log, load_params, parser, read_yaml, run_main

STAMP = "params.yaml validated: every task of tasks.run resolves\n"
# the sections of tasks.<task> that dvc.yaml declares as params (tests/stages/test_validate.py keeps them in step)
TASK_SECTIONS = ("base", "prepare", "degrade", "model", "train", "tune", "evaluate")


def check_task_sections(data: dict, run: tuple[str, ...] | list[str]) -> None:
    """Refuse a parsed ``params.yaml`` in which a task of ``run`` lacks a section of
    :data:`TASK_SECTIONS` (DVC would stop at that task's first stage with a bare "missing")."""
    for task in run:
        over = (data.get("tasks") or {}).get(task) or {}
        missing = [s for s in TASK_SECTIONS if not isinstance(over.get(s), dict)]
        if missing:
            raise ConfigError(
                f"tasks.{task}: name every section that dvc.yaml tracks per task, {{}} where it overrides "
                f"nothing; missing or not a mapping: {', '.join(missing)} (e.g. `{missing[0]}: {{}}`)")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="data/params.ok", help="the stamp file the other stages depend on")
    args = p.parse_args()
    params = load_params(args.params)  # resolves and validates every task of tasks.run
    try:
        check_task_sections(read_yaml(Path(args.params), "params file"), params.tasks.run)
    except ConfigError as exc:
        raise ConfigError(f"{args.params}: {exc}") from exc
    io.write_text(args.out, STAMP)
    log.info("%s: valid for tasks %s", args.params, ", ".join(params.tasks.run))


if __name__ == "__main__":
    run_main(main)
