"""DVC stage ``validate``: check ``params.yaml`` before any stage that has outputs to lose runs.

    python -m stages.validate --params params.yaml --out data/params.ok

DVC deletes a stage's outputs just before it runs the stage's command, so a typo that the stage
itself would refuse (an unknown key, a value out of range) used to cost its outputs, some of
which (``history.csv``, ``train.json``) are not cached and cannot be checked out again. Every
stage depends on this one, which depends on the whole params file: after any edit DVC runs it
first, and a refusal stops ``dvc repro`` with every output still in place. Its output never
changes (a fixed line), so a valid edit re-runs only the stages whose own params changed.
"""
from __future__ import annotations

from pipeline import io
from stages.common import log, load_params, parser, run_main

STAMP = "params.yaml validated: every task of tasks.run resolves\n"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="data/params.ok", help="the stamp file the other stages depend on")
    args = p.parse_args()
    params = load_params(args.params)  # resolves and validates every task of tasks.run
    io.write_text(args.out, STAMP)
    log.info("%s: valid for tasks %s", args.params, ", ".join(params.tasks.run))


if __name__ == "__main__":
    run_main(main)
