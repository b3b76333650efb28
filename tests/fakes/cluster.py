"""A three-node Redis Cluster on loopback, from the embedded Valkey binary.

Each node gets its own client port and cluster-bus port (given with `--cluster-port`, so no
port has to be kept free 10000 above another), one third of the slots (`CLUSTER ADDSLOTSRANGE`),
and is joined to the first (`CLUSTER MEET`). `local_cluster()` yields once every node reports
`cluster_state:ok` and stops the nodes afterwards; the `redis_cluster` fixture of
tests/conftest.py runs one for the whole session.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from hsi.infra.embedded.processes import free_port as _free_port
from hsi.infra.embedded.valkey import valkey_binary as _valkey_binary

LOOPBACK = "127.0.0.1"
SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
START_SECONDS = 30.0


@dataclass(frozen=True)
class ClusterNode:
    port: int
    bus_port: int
    first_slot: int
    last_slot: int
    process: subprocess.Popen[bytes]
    log: Path

    def owns(self, slot: int) -> bool:
        return self.first_slot <= slot <= self.last_slot


@dataclass(frozen=True)
class RedisClusterServer:
    nodes: tuple[ClusterNode, ...]

    @property
    def url(self) -> str:
        """The startup node: the client discovers the others from it."""
        return f"redis://{LOOPBACK}:{self.nodes[0].port}/0"

    def node_of(self, slot: int) -> ClusterNode:
        return next(node for node in self.nodes if node.owns(slot))


def _start_node(folder: Path, index: int) -> ClusterNode:
    port, bus_port = _free_port(), _free_port()
    log = folder / f"node-{index}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(_valkey_binary()),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{index}.conf",
                "--port",
                str(port),
                "--cluster-port",
                str(bus_port),
                "--bind",
                LOOPBACK,
                "--daemonize",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    first, last = SLOT_RANGES[index]
    return ClusterNode(port, bus_port, first, last, process, log)


def _wait(what: str, ready: Callable[[], bool], nodes: list[ClusterNode]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(
                    f"cluster node on port {node.port} exited while waiting for {what}:\n"
                    + node.log.read_text(errors="replace")[-2000:]
                )
        try:
            if ready():
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test cluster did not reach {what} in {START_SECONDS} s")
        time.sleep(0.05)


def _form(nodes: list[ClusterNode]) -> None:
    clients = [redis.Redis(host=LOOPBACK, port=node.port) for node in nodes]
    try:
        _wait("PING", lambda: all(c.ping() for c in clients), nodes)
        for client, node in zip(clients, nodes, strict=True):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", node.first_slot, node.last_slot)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", LOOPBACK, node.port, node.bus_port)

        def all_ok() -> bool:
            return all(
                b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
                for client in clients
            )

        _wait("cluster_state:ok", all_ok, nodes)
    finally:
        for client in clients:
            client.close()


def _stop(node: ClusterNode) -> None:
    node.process.terminate()
    try:
        node.process.wait(10)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait(10)


@contextlib.contextmanager
def local_cluster() -> Iterator[RedisClusterServer]:
    """Three primaries on loopback, slots split in thirds; stopped when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="hsi-cluster-"))
    nodes: list[ClusterNode] = []
    try:
        for index in range(len(SLOT_RANGES)):
            nodes.append(_start_node(folder, index))
        _form(nodes)
        yield RedisClusterServer(tuple(nodes))
    finally:
        for node in nodes:
            _stop(node)
        shutil.rmtree(folder, ignore_errors=True)
