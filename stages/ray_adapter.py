"""The one Ray adapter: start or join a cluster, run tasks on it, train data-parallel under Ray Train.

Local by default: :func:`cluster` starts a Ray on this machine (no dashboard, the cores asked
for, an object store of a given size); with ``RAY_ADDRESS`` set it joins that cluster instead
(``ray start --head`` on one node, ``ray start --address=HEAD:6379`` on the others; the project
and the data at the same path on every node). Every worker gets the project root on its
``PYTHONPATH``, so a task may be any function of ``pipeline`` or ``stages``.

Security: a local Ray listens on 127.0.0.1 only, and Ray's token authentication stays on
(``RAY_AUTH_MODE=token`` unless the environment says otherwise; Ray keeps the token in
``~/.ray/auth_token``, or takes ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``). On a cluster every
node and the driver need ``RAY_AUTH_MODE=token`` and the same token (docs/sweeps.md).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
AUTH_MODE = "RAY_AUTH_MODE"
# Ray's single-node switch (the default on macOS and Windows): the node takes the loopback address,
# so GCS, raylet and workers listen on 127.0.0.1. Ray reads it once, when it is first imported; an
# explicit ``_node_ip_address="127.0.0.1"`` is rewritten to the routable address instead.
SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def worker_env() -> dict[str, str]:
    """The environment Ray adds for every worker: the project importable. Nothing about auth:
    workers inherit their node's ``RAY_AUTH_MODE`` and token."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


@contextlib.contextmanager
def cluster(num_cpus: int | None = None, object_store_mb: int = 0, quiet: bool = False) -> Iterator[float]:
    """Ray for the body of the ``with``; yields the seconds it took to start (or join), shuts
    down on exit. The cluster at ``RAY_ADDRESS`` when set, else a local Ray on 127.0.0.1 with
    ``num_cpus`` cores (default: all) and ``object_store_mb`` MiB of object store (0: Ray's
    default). Token authentication is on unless ``RAY_AUTH_MODE`` says otherwise (Ray turns
    it on by default only for a local Ray, not when joining a cluster at an explicit address)."""
    if os.environ.setdefault(AUTH_MODE, "token") != "token":
        log.warning("%s=%s: Ray's token authentication is off; whoever reaches its ports can run code",
                    AUTH_MODE, os.environ[AUTH_MODE])
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ[SINGLE_NODE] = "0"  # before ``import ray``, which reads it
    import ray

    t0 = time.perf_counter()
    runtime_env = {"env_vars": worker_env()}
    level = "WARNING" if quiet else "INFO"
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=level)
    else:
        size = {"object_store_memory": object_store_mb * 2**20} if object_store_mb else {}
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=runtime_env,
                 logging_level=level, **size)
        node_ip = ray.util.get_node_ip_address()
        if node_ip != LOOPBACK:
            ray.shutdown()
            raise RuntimeError(f"the local Ray came up on {node_ip}, not {LOOPBACK}, and was shut down: ray was "
                               f"imported before stages.ray_adapter.cluster() could set {SINGLE_NODE}=0; "
                               "set it in the environment, or start Ray through the adapter first")
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def resources() -> dict[str, float]:
    """The cluster's total resources (``CPU``, ``GPU``, memory...)."""
    import ray

    return ray.cluster_resources()


def submit(fn: Callable[[Any], Any], arg: Any, num_cpus: float, num_gpus: float = 0.0, max_retries: int = 0) -> Any:
    """Run ``fn(arg)`` as a Ray task asking for ``num_cpus`` cores and ``num_gpus`` GPUs
    (fractions pack tasks on a GPU); a task whose worker process dies is re-run up to
    ``max_retries`` times (an exception raised by ``fn`` is not retried). Returns its handle."""
    import ray

    options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries, "retry_exceptions": False}
    return ray.remote(fn).options(**options).remote(arg)


def gather(handles: list) -> list:
    """The results of ``handles``, in order (waits for all; raises the first task's error)."""
    import ray

    return ray.get(handles)


def as_completed(handles: dict[Any, T]) -> Iterator[tuple[T, Any, BaseException | None]]:
    """``(label, result, None)`` or ``(label, None, error)`` for each task of ``handles``
    (handle -> label) as it ends, a worker dead past its retries being an error too."""
    import ray

    pending = dict(handles)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for handle in ready:
            label = pending.pop(handle)
            try:
                yield label, ray.get(handle), None
            except Exception as exc:  # noqa: BLE001 - a dead worker, or any error of the task
                yield label, None, exc


# -- Ray Train: data parallelism ---------------------------------------------------------------
def fit_data_parallel(loop: Callable[[dict], None], config: dict, num_workers: int, num_cpus: float,
                      num_gpus: float, storage: Path) -> None:
    """Run ``loop(config)`` on ``num_workers`` workers of a ``TorchTrainer`` (each asks
    ``num_cpus`` cores and ``num_gpus`` GPUs; a ``torch.distributed`` group over gloo on CPU,
    NCCL on GPU), Ray Train's records in ``storage``. ``loop`` returns nothing: it writes what
    it must keep (rank 0, :func:`worker_rank`)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = num_gpus > 0
    trainer = TorchTrainer(
        loop, train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": num_cpus, **({"GPU": num_gpus} if use_gpu else {})}),
        run_config=RunConfig(storage_path=str(storage.resolve()), name="train"),
    )
    trainer.fit()


def worker_device() -> torch.device:
    """Inside a Ray Train worker: its GPU when there are GPUs, else the CPU."""
    import ray.train.torch

    return ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")


def worker_rank() -> int:
    """Inside a Ray Train worker: its rank among the workers (0 writes the results)."""
    import ray.train

    return ray.train.get_context().get_world_rank()
