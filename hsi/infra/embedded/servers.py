"""Both embedded servers under one data folder, started and stopped under the services lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hsi.infra.embedded.postgres import EmbeddedPostgres
from hsi.infra.embedded.processes import ServiceStatus, services_lock
from hsi.infra.embedded.valkey import EmbeddedRedis


@dataclass(frozen=True)
class EmbeddedServers:
    data_dir: Path

    @property
    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir)

    @property
    def redis(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir)

    def start_postgres(self) -> str:
        with services_lock(self.data_dir):
            return self.postgres.start()

    def start_redis(self) -> str:
        with services_lock(self.data_dir):
            return self.redis.start()

    def stop(self) -> list[str]:
        stopped = []
        with services_lock(self.data_dir):
            for server in (self.redis, self.postgres):
                if server.stop():
                    stopped.append(server.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [self.redis.status(), self.postgres.status()]
