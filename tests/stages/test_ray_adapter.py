"""The local Ray that ``stages.ray_adapter.cluster`` starts (what every sweep uses): it listens on
127.0.0.1 only, token authentication is on and a client without the token is refused, and the
environment it gives its workers leaves authentication to Ray (no ``RAY_AUTH_MODE=disabled``)."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import psutil
import pytest

from stages import ray_adapter

# A client in a fresh process, told the GCS address and nothing else: its token (if any) comes
# from the environment the test gives it.
CLIENT = """
import sys
from ray._raylet import GcsClient
try:
    print("ACCEPTED", len(GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""


def listening(pid: int) -> list[tuple[str, str, int]]:
    """``(process name, ip, port)`` of every listening TCP socket of ``pid`` and its descendants."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found = []
    for proc in procs:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that ended meanwhile
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or (addr.version == 6 and addr.ipv4_mapped is not None and addr.ipv4_mapped.is_loopback)


def client(address: str, home: str, **env: str) -> str:
    """What a client with only ``env``'s auth settings (and ``home``'s token file) gets from the GCS."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run([sys.executable, "-c", CLIENT, address], env={**base, "HOME": home, **env},
                          capture_output=True, text=True, timeout=120)
    return done.stdout


def test_the_worker_env_leaves_auth_to_ray(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE" not in ray_adapter.worker_env()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "RAY_AUTH_MODE" not in ray_adapter.worker_env()


@pytest.mark.slow
def test_a_local_ray_listens_on_the_loopback_only_and_refuses_a_client_without_the_token(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the adapter's default, whatever the caller's shell says
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_adapter.cluster(num_cpus=1, object_store_mb=80, quiet=True):
        import ray
        from ray._raylet import AuthenticationTokenLoader

        sockets = listening(os.getpid())
        gcs = ray.get_runtime_context().gcs_address
        names = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets
        assert all(is_loopback(ip) for _, ip, _ in sockets), sockets
        assert gcs.startswith("127.0.0.1:") and int(gcs.rsplit(":", 1)[1]) in {port for _, _, port in sockets}
        # a worker sees token auth (os.getenv: a function the worker imports by name)
        assert ray_adapter.gather([ray_adapter.submit(os.getenv, "RAY_AUTH_MODE", num_cpus=1)]) == ["token"]

        empty = str(tmp_path)  # a HOME without ~/.ray/auth_token
        assert client(gcs, empty, RAY_AUTH_MODE="disabled").startswith("REFUSED AuthenticationError")
        assert client(gcs, empty, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32).startswith("REFUSED AuthenticationError")
        token = AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True)
        assert client(gcs, empty, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token).startswith("ACCEPTED 1")
