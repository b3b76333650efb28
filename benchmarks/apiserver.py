"""HSI's query API in a process of its own, served the way `hsi up` serves it.

    python -m benchmarks.apiserver --database-url URL --schema S --redis-url URL --port P

Telemetry and logging are set up as `hsi up` sets them up (traces sampled, metrics on; INFO logs
on stderr, uvicorn's access log included), and uvicorn runs with `hsi up`'s options. Only the
rate limits are off: 50 clients from one address would otherwise be refused after 600 requests
a minute. `serve()` starts it as a subprocess for a benchmark and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from hsi.app.asgi import APIConfig, RateLimits, create_app
from hsi.infra.redis import RedisConfig
from hsi.infra.telemetry import TelemetryConfig, setup_telemetry
from hsi.logs.setup import LoggingConfig, setup_logging

REPOSITORY = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="hsi")
    args = parser.parse_args(argv)
    setup_logging(LoggingConfig())
    setup_telemetry(TelemetryConfig())
    config = APIConfig(
        database_url=args.database_url,
        redis=RedisConfig(url=args.redis_url),
        database_schema=args.schema,
        stream_prefix=args.prefix,
        rate_limits=RateLimits(enabled=False),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host="127.0.0.1",
            port=args.port,
            log_config=None,
            timeout_graceful_shutdown=5,
            proxy_headers=False,  # as `hsi up`: the app reads X-Forwarded-* itself
        )
    )
    server.run()


@contextlib.contextmanager
def serve(
    database_url: str, schema: str, redis_url: str, port: int, *, prefix: str = "hsi"
) -> Iterator[str]:
    """The API in a subprocess until the block ends; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.apiserver",
        "--database-url",
        database_url,
        "--schema",
        schema,
        "--redis-url",
        redis_url,
        "--port",
        str(port),
        "--prefix",
        prefix,
    ]
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - our own module, with the running interpreter
            command, cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(base, process)
            except RuntimeError as exc:
                errors.seek(0)
                tail = errors.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{exc}; its stderr ended with:\n{tail}") from None
            yield base
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until `base`/health answers 200 (`RuntimeError` if the process exits first)."""
    parts = urlsplit(base)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited with code {process.returncode}")
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=1.0)
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return
        connection.close()
        time.sleep(0.1)
    raise RuntimeError(f"{base}/health did not answer 200 within {timeout:.0f} s")


if __name__ == "__main__":
    main()
