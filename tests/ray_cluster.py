"""A real multi-node Ray cluster on this machine, for the cluster test: a head with no CPUs and
worker nodes, each its own raylet, on 127.0.0.1 (``ray.cluster_utils.Cluster``), in a process of
its own (Ray reads its single-machine switch once, at import).

    python tests/ray_cluster.py --workers 2 --cpus 1

Prints ``ADDRESS <gcs address>`` once the nodes are up, then obeys lines on stdin: ``remove I``
kills worker node I at once (no graceful drain, as a lost machine; prints ``REMOVED I``),
``shutdown`` or end of input stops every node and exits. Token authentication is whatever the
environment says (the test sets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``).
"""
from __future__ import annotations

import argparse
import os
import sys

# every node on the loopback (Ray's switch for clusters on one machine; read when ray is imported)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus", type=int, default=1, help="CPUs per worker node")
    p.add_argument("--object-store-mb", type=int, default=80)
    args = p.parse_args()
    from ray.cluster_utils import Cluster

    store = args.object_store_mb * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "object_store_memory": store})
    try:
        workers = [cluster.add_node(num_cpus=args.cpus, object_store_memory=store) for _ in range(args.workers)]
        cluster.wait_for_nodes()
        print(f"ADDRESS {cluster.address}", flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if cmd[:1] == ["remove"]:
                cluster.remove_node(workers[int(cmd[1])], allow_graceful=False)
                print(f"REMOVED {cmd[1]}", flush=True)
            elif cmd[:1] == ["shutdown"]:
                break
    finally:
        cluster.shutdown()
        print("DOWN", flush=True)


if __name__ == "__main__":
    main()
