"""Stage / command ``sweep``: an ablation sweep (``sweeps/*.yaml``) run on Ray, tracked in MLflow.

    python -m stages.sweep --sweep sweeps/tiny.yaml --params params.yaml \
        --prepared data/deblur/prepared --degraded data/deblur/degraded --out sweeps/results/tiny

Ray (``stages/ray_adapter.py``): a local one with this machine's cores by default (``--num-cpus``
to change), the cluster at ``RAY_ADDRESS`` when it is set. Each trial is a Ray task asking for
the sweep file's ``resources`` (``num_cpus``, fractional ``num_gpus``) and trains with the same
function as the ``train`` stage (``stages/sweep_trial.py``); with ``train.num_workers > 1``
under Ray Train's ``TorchTrainer`` (gloo on CPU, NCCL on GPU).

Faults: a trial whose worker dies is re-run by Ray up to ``max_retries`` times and resumes from
its last checkpoint (``OUT/trials/ID/checkpoint.pt``); a finished trial leaves
``OUT/trials/ID/result.json``, so a re-launched sweep reads it back instead of re-running it
(unless the trial's params or the data changed). Failures are listed in the summary, the table
and MLflow (a FAILED child run), and the command exits 1.

Tracking (``stages/tracking.py``): one MLflow parent run per sweep (re-opened on a re-launch), a
child run per trial with its params, curves and final metrics, logged by the trial itself to
the same tracking URI (make it a server, ``http://...``, on a cluster). Writes
``OUT/results.csv``, ``results.md``, ``ranking.csv``, ``summary.md``, ``summary.json``,
``best.yaml`` (the winner as ``params.yaml`` keys), ``figures/*.png`` and ``run.json`` (timings
and counts). ``python -m stages.sweep --apply NAME`` merges ``best.yaml`` into ``params.yaml``
(:mod:`stages.apply`), so that ``dvc repro`` trains the winner.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline import io
from pipeline.config import ConfigError, flatten, merge, params_from_dict, pin_task
from pipeline.sweep import (SweepSpec, Trial, best_yaml, expand, markdown_table, parse_sweep, psnr_by_noise_figure,
                            rank, ranking_text, results_frame, stage_table, stages_figure, summary_markdown,
                            summary_record, time_figure, winner_overrides)
from stages import apply, ray_adapter
from stages.common import TaskPaths, log, load_params, parser, read_yaml, run_main
from stages.sweep_trial import LAUNCH_MARKERS, attempts, read_finished, run_trial, trial_task
from stages.tracking import SweepRun, close_sweep_run, log_trial_run, open_sweep_run

OUTPUTS = ("results.csv", "results.md", "ranking.csv", "summary.md", "summary.json", "best.yaml")


def data_fingerprint(prepared: Path, degraded: Path) -> str:
    """What the trials read: a finished trial with another fingerprint is re-run."""
    return hashlib.sha256("".join(io.sha256_file(p) for p in (prepared / "manifest.csv", degraded / "samples.csv"))
                          .encode()).hexdigest()[:16]


def run_pending(pending: list[Trial], spec: SweepSpec, out: Path, prepared: Path, degraded: Path,
                tracking: SweepRun | None, num_cpus: int | None, object_store_mb: int,
                fault: tuple[str, int] | None) -> tuple[list[dict], float]:
    """Run ``pending`` trials on Ray; ``(records, Ray start-up seconds)``. A trial that still fails
    after ``max_retries`` re-runs of its worker becomes a ``failed`` record."""
    records = []
    with ray_adapter.cluster(num_cpus, object_store_mb) as startup:
        log.info("Ray ready in %.1f s: %s", startup, ray_adapter.resources())
        handles = {}
        for i, t in enumerate(pending):
            for marker in LAUNCH_MARKERS:
                (out / "trials" / t.trial_id / marker).unlink(missing_ok=True)
            fault_step = fault[1] if fault and fault[0] in (t.trial_id, str(i)) else None
            task = trial_task(t, out / "trials" / t.trial_id, prepared, degraded, spec.resources, tracking, fault_step)
            # a data-parallel trial only coordinates: its TorchTrainer workers ask for the resources
            dp = t.params.train.num_workers > 1
            handle = ray_adapter.submit(run_trial, task, num_cpus=0 if dp else spec.resources.num_cpus,
                                        num_gpus=0 if dp else spec.resources.num_gpus, max_retries=spec.max_retries)
            handles[handle] = (t, task)
        for (t, task), result, error in ray_adapter.as_completed(handles):
            if error is None:
                records.append(result)
                log.info("trial %s finished", t.trial_id)
            else:  # a dead worker past its retries, or an error in the trial
                records.append(failed_record(t, task, error))
                log.error("trial %s failed: %s", t.trial_id, records[-1]["error"])
    return records, startup


def failed_record(t: Trial, task: dict, exc: BaseException) -> dict:
    """The record of a failed trial, also in ``failed.json`` and as a FAILED child run."""
    trial_dir = Path(task["dir"])
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]
    record = {"trial_id": t.trial_id, "key": t.key, "status": "failed", "values": task["values"], "seed": t.seed,
              "metrics": {}, "stages": [], "attempts": attempts(trial_dir), "error": error}
    io.write_json(trial_dir / "failed.json", record)  # for the record; a re-launch runs the trial again
    if task.get("tracking"):
        try:
            record["run_id"] = log_trial_run(task["tracking"], t.trial_id, flatten(task["params"]), [], {}, "FAILED",
                                             {"error": error[:250], "attempts": str(record["attempts"])})
        except Exception as log_exc:  # noqa: BLE001 - the failure itself is what matters here
            log.warning("could not log the failed trial %s to MLflow: %s", t.trial_id, log_exc)
    return record


def write_outputs(records: list[dict], spec: SweepSpec, out: Path, trials: list[Trial]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Table (CSV, Markdown), ranking, summary, the winner as params (``best.yaml``) and figures
    from every trial's record."""
    import matplotlib.pyplot as plt

    frame = results_frame(records, spec)
    ranking = rank(frame, spec)
    text = ranking_text(ranking, spec)
    io.write_text(out / "results.csv", frame.to_csv(index=False))
    io.write_text(out / "results.md", markdown_table(frame.drop(columns=["error"]) if "error" in frame else frame))
    io.write_text(out / "ranking.csv", ranking.to_csv(index=False))
    io.write_text(out / "summary.md", summary_markdown(spec, frame, ranking, text))
    io.write_json(out / "summary.json", summary_record(spec, frame, ranking))
    winner = winner_overrides(spec, trials, ranking)
    if winner is not None:
        io.write_text(out / "best.yaml", best_yaml(spec, *winner, ranking))
    for name, fig in (("psnr_by_noise.png", psnr_by_noise_figure(frame, spec)), ("train_time.png", time_figure(frame, spec)),
                      ("stages.png", stages_figure(stage_table(records)))):
        with io.atomic_path(out / "figures" / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return frame, ranking, text


def load_spec(sweep_path: Path, base: dict) -> SweepSpec:
    data = read_yaml(sweep_path, "sweep file")
    try:
        return parse_sweep(data, base)
    except ConfigError as exc:
        raise type(exc)(f"{sweep_path}: {exc}") from exc


def parse_fault(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    trial, _, step = text.partition("@")
    if not step.isdigit():
        raise ConfigError(f"--inject-fault: expected TRIAL@STEP, got {text!r}")
    return trial, int(step)


def apply_winner(name: str, params_path: Path) -> None:
    """``--apply``: the sweep's ``best.yaml`` merged into the params file (validated, comments kept)."""
    path = Path(name)
    path = path / "best.yaml" if path.is_dir() else path if path.is_file() else Path("sweeps/results") / name / "best.yaml"
    if not path.exists():
        raise io.InputError(f"{path}: no best.yaml (has sweep {name!r} finished a trial?)")
    apply.report(apply.apply_file(params_path, path), params_path, dry_run=False)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sweep", default="sweeps/tiny.yaml", help="the sweep file (axes, seeds, resources)")
    p.add_argument("--prepared", default=str(TaskPaths("deblur").prepared))  # sweeps run deblurring only
    p.add_argument("--degraded", default=str(TaskPaths("deblur").degraded))
    p.add_argument("--out", default=None, help="output folder (default: sweeps/results/<name>)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only: cores to use (default: all)")
    p.add_argument("--object-store-mb", type=int, default=0, help="local Ray only: object store size (0: Ray's default)")
    p.add_argument("--no-tracking", action="store_true", help="no MLflow runs")
    p.add_argument("--inject-fault", default=None, metavar="TRIAL@STEP",
                   help="testing: the worker of TRIAL (an id or an index among the trials to run) dies once at that bilevel step")
    p.add_argument("--apply", default=None, metavar="NAME",
                   help="merge the winner of sweep NAME (sweeps/results/NAME/best.yaml, or a results folder, or a "
                        "best.yaml) into --params, then exit: `dvc repro` then trains it")
    args = p.parse_args()
    if args.apply:
        return apply_winner(args.apply, Path(args.params))
    load_params(args.params)  # the params file alone must be valid (clear errors first)
    base = read_yaml(Path(args.params), "params file") or {}
    spec = load_spec(Path(args.sweep), base)
    task = params_from_dict(pin_task(merge(base, spec.overrides))).base.task
    if task != "deblur":  # the trials are scored per noise level on blurred validation samples
        raise ConfigError(f"base.task {task}: ablation sweeps run for deblur only (not yet for rain and haze)")
    prepared, degraded = Path(args.prepared), Path(args.degraded)
    for path in (prepared / "manifest.csv", degraded / "samples.csv"):
        if not path.exists():
            raise io.InputError(f"{path}: missing (run `dvc repro degrade` first)")
    trials = expand(spec, base, data_fingerprint(prepared, degraded))
    out = Path(args.out or f"sweeps/results/{spec.name}")
    fault = parse_fault(args.inject_fault)

    done = {t.trial_id: r for t in trials if (r := read_finished(out / "trials" / t.trial_id, t.key))}
    pending = [t for t in trials if t.trial_id not in done]
    log.info("sweep %s: %d trials, %d already finished (read back), %d to run", spec.name, len(trials), len(done),
             len(pending))
    tracking = None if args.no_tracking else open_sweep_run(out / "sweep_run.json", spec.name, task, {
        "sweep.name": spec.name, "sweep.axes": json.dumps({a.name: list(a.values) for a in spec.axes}),
        "sweep.seeds": json.dumps(list(spec.seeds)), "sweep.num_cpus": spec.resources.num_cpus,
        "sweep.num_gpus": spec.resources.num_gpus, "sweep.max_retries": spec.max_retries, "sweep.n_trials": len(trials)})
    t0 = time.perf_counter()
    records, startup = run_pending(pending, spec, out, prepared, degraded, tracking, args.num_cpus, args.object_store_mb,
                                   fault) if pending else ([], 0.0)
    wall = time.perf_counter() - t0
    by_id = {**done, **{r["trial_id"]: r for r in records}}
    frame, ranking, text = write_outputs([by_id[t.trial_id] for t in trials], spec, out, trials)
    failed = frame[frame["status"] != "finished"]["trial_id"].tolist()
    counts = {"n_run": len(pending), "n_read_back": len(done), "n_failed": len(failed)}
    io.write_json(out / "run.json", {"wall_seconds": round(wall, 2), "ray_startup_seconds": round(startup, 2), **counts})
    if tracking:
        best = {"best_val_psnr": float(ranking.iloc[0]["mean"])} if len(ranking) else {}
        close_sweep_run(tracking, {"n_trials": len(trials), **counts, "wall_seconds": wall,
                                   "ray_startup_seconds": startup, **best},
                        [out / name for name in OUTPUTS if (out / name).exists()] + [out / "figures"],
                        failed=bool(failed))
    log.info("%s", text)
    if failed:
        log.error("%d trial(s) failed: %s (see %s)", len(failed), ", ".join(failed), out / "summary.md")
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
