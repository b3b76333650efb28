"""A three-node Redis Cluster on loopback from the embedded Valkey binary, for one test module."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from hsi.embedded import _valkey_binary

SLOTS = ((0, 5460), (5461, 10922), (10923, 16383))


def _free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock, socket.socket() as bus:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port + 10_000 > 65_535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port
    raise AssertionError("no free port pair for a cluster node")


def _wait(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"the test cluster did not get {what}")


@contextmanager
def local_cluster() -> Iterator[str]:
    """Start three cluster-enabled nodes, give each a third of the slots, join them; yield the
    URL of the first node."""
    folder = Path(tempfile.mkdtemp(prefix="hsi-cluster-"))
    ports = [_free_port() for _ in SLOTS]
    processes = [
        subprocess.Popen(
            [
                str(_valkey_binary()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        for client in clients:
            _wait(client.ping, "a PING answer")
        for client, (first, last) in zip(clients, SLOTS, strict=True):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)

        def ready() -> bool:
            for client in clients:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or "cluster_known_nodes:3" not in text:
                    return False
            return True

        _wait(ready, "cluster_state:ok")
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
