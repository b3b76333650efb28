"""The `hsi` command line: the composition root that reads settings and wires everything."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from hsi.settings.model import Settings, SettingsError, get_settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group()
@click.version_option(package_name="hsi")
def main() -> None:
    """HSI — home security intelligence: camera uploads to scored security events."""


# --- config -------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print every setting (secrets masked) as JSON."""
    click.echo(json.dumps(_settings().masked(), indent=2, sort_keys=True, default=str))


@config.command("docs")
@click.option("--write", is_flag=True, help="Write docs/configuration.md and .env.example.")
@click.option(
    "--check", is_flag=True, help="Exit 1 when the checked-in files differ from Settings."
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="The repository root holding docs/ and .env.example.",
)
def config_docs(write: bool, check: bool, root: Path) -> None:
    """Print the configuration reference (Markdown) generated from the settings."""
    from hsi.settings import docs

    if write and check:
        raise click.UsageError("use --write or --check, not both")
    if check:
        stale = docs.stale_files(root)
        for path in stale:
            click.echo(f"out of date: {path.as_posix()}", err=True)
        if stale:
            click.echo(f"run `{docs.REGENERATE_COMMAND}` and commit the result", err=True)
            sys.exit(1)
        click.echo("configuration docs are up to date")
    elif write:
        written = docs.write_files(root)
        for path in written:
            click.echo(f"wrote {path.as_posix()}")
        if not written:
            click.echo("configuration docs are up to date")
    else:
        click.echo(docs.render_markdown(), nl=False)


# --- services -----------------------------------------------------------------------------------


@main.group()
def services() -> None:
    """Manage the embedded Redis and PostgreSQL (used when REDIS_URL/DATABASE_URL are unset)."""


def _embedded_error() -> type[Exception]:
    from hsi.infra.embedded import EmbeddedServerError

    return EmbeddedServerError


@services.command("start")
def services_start() -> None:
    """Start (or reuse) the embedded servers and print their URLs."""
    from hsi.app.services import ensure_services

    settings = _settings()
    try:
        urls = ensure_services(settings)
    except _embedded_error() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"redis     {urls.redis_url}")
    click.echo(f"postgres  {urls.database_url}")


@services.command("stop")
def services_stop() -> None:
    """Stop the embedded servers."""
    from hsi.app.services import embedded_servers

    stopped = embedded_servers(_settings()).stop()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
def services_status() -> None:
    """Show whether the embedded servers run, with pid and URL."""
    from hsi.app.services import embedded_servers

    for status in embedded_servers(_settings()).status():
        state = "running" if status.running else "stopped"
        pid = f"pid {status.pid}" if status.pid else ""
        click.echo(f"{status.name:<9} {state:<8} {pid:<11} {status.url or status.detail}")


# --- database -----------------------------------------------------------------------------------


async def _migrate(database_url: str) -> list[str]:
    from hsi.infra.db import create_engine, migrate

    engine = create_engine(database_url)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


@main.command("migrate")
def migrate_command() -> None:
    """Apply the pending SQL migrations (starting the embedded PostgreSQL if needed)."""
    from hsi.app.services import ensure_services
    from hsi.infra.db import DatabaseError

    settings = _settings()
    try:
        urls = ensure_services(settings)
        assert urls.database_url is not None  # asked for by default
        applied = _run(_migrate(urls.database_url))
    except (DatabaseError, _embedded_error()) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("applied: " + ", ".join(applied) if applied else "migrations are current")


# --- certificates -------------------------------------------------------------------------------


@main.group()
def certs() -> None:
    """TLS certificates."""


@certs.command("generate")
@click.option("--force", is_flag=True, help="Replace an existing certificate.")
def certs_generate(force: bool) -> None:
    """Generate a self-signed certificate for the configured host names and addresses."""
    from hsi.infra import certificates
    from hsi.settings import components

    settings = _settings()
    config = components.tls_config(settings)
    cert, key = config.cert_dir / "hsi.crt", config.cert_dir / "hsi.key"
    if cert.exists() and not force:
        raise click.ClickException(f"{cert} exists; pass --force to replace it")
    try:
        info = certificates.generate_self_signed(
            cert,
            key,
            hostnames=config.hostnames,
            ip_addresses=config.ip_addresses,
            days=config.days,
        )
    except certificates.TLSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"certificate: {cert}\nkey:         {key}")
    click.echo(certificates.describe(info))


@certs.command("show")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def certs_show(path: str | None) -> None:
    """Show a certificate (default: the configured or generated one)."""
    from pathlib import Path

    from hsi.infra import certificates
    from hsi.settings import components

    settings = _settings()
    config = components.tls_config(settings)
    target = Path(path) if path else (config.cert_path or config.cert_dir / "hsi.crt")
    try:
        click.echo(certificates.describe(certificates.inspect_certificate(target)))
    except certificates.TLSError as exc:
        raise click.ClickException(str(exc)) from None


# --- doctor -------------------------------------------------------------------------------------


@main.command("doctor")
def doctor() -> None:
    """Check Redis, PostgreSQL, the AI backends and the camera root; one line each."""
    from hsi.app.doctor import Status, run_checks

    verdicts = _run(run_checks(_settings()))
    for verdict in verdicts:
        click.echo(verdict.line())
    if any(v.status is Status.FAIL for v in verdicts):
        sys.exit(1)


# --- running ------------------------------------------------------------------------------------


def _startup_errors() -> tuple[type[Exception], ...]:
    from hsi.app.runner import STARTUP_ERRORS
    from streams.alerts import AlertError
    from streams.watch.config import WatchError

    return (*STARTUP_ERRORS, WatchError, AlertError)


@main.command("up")
@click.option("--host", default=None, help="Bind address (default API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default API_PORT).")
@click.option("--no-watch", is_flag=True, help="Do not watch the camera root.")
def up(host: str | None, port: int | None, no_watch: bool) -> None:
    """Run HSI in one process: watcher, stages, reclaimers and the API."""
    from hsi.app.runner import UpOptions, run_up

    settings = _settings()
    try:
        run_up(settings, UpOptions(host=host, port=port, watch=not no_watch))
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.command("api")
@click.option("--host", default=None, help="Bind address (default API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve only the read-only query API and dashboard (the stages run as `hsi worker`)."""
    from hsi.app.runner import UpOptions, run_api

    settings = _settings()
    try:
        run_api(settings, UpOptions(host=host, port=port, watch=False))
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.command("demo")
@click.option(
    "--no-wait", is_flag=True, help="Play the scene, print the summary and exit (tests, CI)."
)
@click.option(
    "--speed",
    type=click.FloatRange(0.25, 20.0),
    default=1.0,
    show_default=True,
    help="Play the scene (and the batch timeouts) this many times faster.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="API port (default: API_PORT when set, else 8000, else any free port).",
)
def demo(no_wait: bool, speed: float, port: int | None) -> None:
    """Play a scene from three cameras through the whole system, then keep the API running."""
    from hsi.demo import DemoError, DemoOptions, run_demo

    errors: tuple[type[Exception], ...] = (DemoError, *_startup_errors())
    try:
        report = run_demo(_settings(), DemoOptions(speed=speed, wait=not no_wait, port=port))
    except errors as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(report.exit_code)


STAGE_CHOICES = ("detect", "batch", "analyze", "project", "notify", "all")


@main.command("worker")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(STAGE_CHOICES),
    default=("all",),
    show_default=True,
    help="Stage(s) to run; repeatable.",
)
@click.option("--cameras", default=None, help="Only these camera ids, comma-separated.")
@click.option("--shard", default=None, help="Only shard i/n of the cameras (e.g. 0/2).")
def worker(stages: tuple[str, ...], cameras: str | None, shard: str | None) -> None:
    """Run stages for some or all cameras (scale out per stage and camera)."""
    from hsi.app.pipeline import ALL_STAGES, PipelineOptions
    from hsi.app.runner import run_worker
    from streams.names import Group
    from streams.stages.runtime import CameraSelection

    try:
        selection = CameraSelection.parse(cameras, shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    groups = ALL_STAGES if "all" in stages else tuple(Group(s) for s in dict.fromkeys(stages))
    try:
        run_worker(_settings(), PipelineOptions(stages=groups, selection=selection))
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.command("watch")
def watch() -> None:
    """Watch the camera root only (the other stages run elsewhere)."""
    from hsi.app.runner import run_watch

    try:
        run_watch(_settings())
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.command("ftp")
def ftp() -> None:
    """Run only the built-in FTP receiver (FTP_ACCOUNTS: one login per camera)."""
    from hsi.app.runner import run_ftp

    settings = _settings()
    if settings.ftp_accounts is None:
        raise click.ClickException("set FTP_ACCOUNTS (user:password:folder,…) to serve FTP")
    try:
        run_ftp(settings)
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def ingest(paths: tuple[str, ...]) -> None:
    """Backfill files or folders under the camera root through the watcher's checks."""
    from hsi.app.runner import run_ingest

    try:
        outcomes = run_ingest(_settings(), [Path(p) for p in paths])
    except _startup_errors() as exc:
        raise click.ClickException(str(exc)) from None
    counts: dict[str, int] = {}
    for outcome in outcomes:
        kind = str(outcome.kind)
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in ("observed", "duplicate"):
            click.echo(f"{kind:<10} {outcome.path}  {outcome.reason or ''}".rstrip())
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no files")


@main.command("docs")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs") / "api",
    show_default=True,
    help="Folder to write openapi.json and asyncapi.json into.",
)
def docs(folder: Path) -> None:
    """Write the OpenAPI (query API) and AsyncAPI (streams) documents as JSON files."""
    from hsi.app.docs import write_docs

    settings = _settings()
    written = write_docs(
        folder,
        prefix=settings.stream_prefix,
        keys_enabled=settings.api_key_enabled,
        rate_limited=settings.rate_limit_enabled,
    )
    for path in written:
        click.echo(f"wrote {path.as_posix()}")


@main.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks of a source checkout (`python -m benchmarks`; --help for options)."""
    import subprocess

    if not (Path.cwd() / "benchmarks" / "__main__.py").is_file():
        raise click.ClickException(
            "the benchmarks are not installed with HSI: run `hsi bench` from the root of a "
            "source checkout (the folder holding benchmarks/)"
        )
    # A process of its own: the benchmarks are a client of HSI, not a part of it.
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks", *args]))  # noqa: S603


# --- read side ----------------------------------------------------------------------------------


def _read_side_call(fn: Callable[..., Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    """Run `fn(engine, redis, names, **kwargs)` against the configured (or embedded) servers."""
    from hsi.app.services import ensure_services
    from hsi.infra.db import DatabaseError, create_engine
    from hsi.infra.redis import create_redis
    from hsi.settings import components

    settings = _settings()
    try:
        urls = ensure_services(settings)
    except _embedded_error() as exc:
        raise click.ClickException(str(exc)) from None
    assert urls.database_url is not None

    async def call() -> T:
        engine = create_engine(urls.database_url or "")
        client = create_redis(components.redis_config(settings, urls.redis_url))
        try:
            return await fn(engine, client, components.stream_names(settings), **kwargs)
        finally:
            await client.aclose()
            await engine.dispose()

    try:
        return _run(call())
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None


class _ProgressLine:
    """`done/total, rate, ETA` on one terminal line (stderr)."""

    def __init__(self, label: str) -> None:
        import time

        self._label = label
        self._clock = time.monotonic
        self._start = self._clock()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        from hsi.app.read_side import eta_seconds

        now = self._clock()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        elapsed = now - self._start
        eta = eta_seconds(done, total, elapsed)
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        eta_text = f"ETA {eta:.0f}s" if eta is not None else "ETA -"
        click.echo(
            f"\r{self._label} [{bar}] {done}/{total} {rate:.0f}/s {eta_text}   ",
            nl=False,
            err=True,
        )
        if done >= total:
            click.echo("", err=True)


@main.command("replay")
@click.option(
    "--projection",
    default="main",
    show_default=True,
    type=click.Choice(["main"]),
    help="Which projection to rebuild.",
)
@click.option("--verify", is_flag=True, help="Rebuild aside and compare; change nothing.")
def replay(projection: str, verify: bool) -> None:
    """Rebuild the projections from the streams and swap them in while the API serves."""
    from hsi.app import read_side

    if verify:
        report = _read_side_call(read_side.verify, progress=_ProgressLine("verify"))
        for line in read_side.verify_lines(report):
            click.echo(line)
        if not report.equal:
            sys.exit(1)
        return
    done = _read_side_call(read_side.replay, progress=_ProgressLine("replay"))
    click.echo(
        f"rebuilt {projection} from {done.entries} entries of {done.streams} streams "
        f"({len(done.cameras)} cameras; {done.applied} applied, {done.failed} unreadable)"
    )


@main.group()
def retention() -> None:
    """Delete what is older than RETENTION_DAYS."""


@retention.command("run")
def retention_run() -> None:
    """One retention pass: projection rows, acknowledged stream entries, optionally media."""
    from hsi.app import read_side

    settings = _settings()
    report = _read_side_call(
        read_side.retention,
        retention_days=settings.retention_days,
        delete_media=settings.retention_delete_media,
        camera_root=settings.camera_root,
    )
    click.echo(f"cutoff {report.cutoff.isoformat()}")
    click.echo(f"stream entries trimmed: {report.trimmed}")
    for table, count in sorted(report.rows.items()):
        click.echo(f"rows deleted from {table}: {count}")
    if settings.retention_delete_media:
        click.echo(f"media files deleted: {report.media_deleted}")
    for path in report.media_refused:
        click.echo(f"refused to delete {path} (outside the camera root)")


# --- alerts -------------------------------------------------------------------------------------


@main.group()
def alerts() -> None:
    """Alert rules and channels."""


@alerts.command("check")
def alerts_check() -> None:
    """Check ALERT_RULES_PATH and the channel settings; print the rules in force."""
    from hsi.settings import components
    from streams.alerts import AlertError, load_rules
    from streams.alerts.rules import check_channels

    settings = _settings()
    try:
        notify = components.notify_config(settings)
        rules = load_rules(notify.rules_path)
        check_channels(rules, notify.channel_names)
    except AlertError as exc:
        raise click.ClickException(str(exc)) from None
    state = "on" if settings.notification_enabled else "off (NOTIFICATION_ENABLED=false)"
    click.echo(f"notifications: {state}")
    click.echo(f"channels: {', '.join(notify.channel_names)}")
    click.echo(f"rules: {rules.source}, zone {rules.timezone or notify.timezone}")
    for rule in rules.rules:
        parts = [
            f"level >= {rule.min_level}" if rule.min_level else "",
            f"score >= {rule.min_score}" if rule.min_score is not None else "",
            f"cameras {', '.join(sorted(rule.cameras))}" if rule.cameras else "every camera",
            f"objects {', '.join(sorted(rule.object_types))}" if rule.object_types else "",
            f"schedule {', '.join(map(str, rule.schedule.windows))}" if rule.schedule else "",
            f"cooldown {rule.cooldown_seconds:g} s" if rule.cooldown_seconds else "",
            "→ " + ", ".join(rule.channels_of(notify.channel_names)),
        ]
        click.echo(f"- {rule.name}: " + "; ".join(p for p in parts if p))


# --- dead letters -------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead letters: entries that failed too many times."""


def _dlq_call(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    from hsi.app.services import running_services
    from streams.dlq import DeadLetterError

    settings = _settings()
    _, redis_url = running_services(settings)
    if redis_url is None:
        raise click.ClickException("Redis is not running: start it with `hsi services start`")

    async def call() -> T:
        from hsi.infra.redis import create_redis
        from hsi.settings import components

        client = create_redis(components.redis_config(settings, redis_url))
        try:
            return await fn(client, components.stream_names(settings), *args)
        finally:
            await client.aclose()

    try:
        return _run(call())
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None


async def _cameras(client: Any, names: Any) -> list[str]:
    members = await client.smembers(names.camera_set)
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


@dlq.command("list")
@click.option("--camera", default=None, help="Only this camera.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def dlq_list(camera: str | None, limit: int) -> None:
    """List dead letters, newest first."""
    from streams.dlq import list_dead

    async def listing(client: Any, names: Any) -> list[Any]:
        cameras = [camera] if camera else await _cameras(client, names)
        return await list_dead(client, names, cameras, limit)

    letters = _dlq_call(listing)
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(
            f"{letter.camera:<16} {letter.dead_id:<18} {letter.group:<8} "
            f"{letter.original_type or '-':<20} x{letter.deliveries:<3} {letter.last_error}"
        )


@dlq.command("show")
@click.argument("camera")
@click.argument("dead_id")
def dlq_show(camera: str, dead_id: str) -> None:
    """Show one dead letter with its original entry."""
    from streams.dlq import show_dead

    detail = _dlq_call(show_dead, camera, dead_id)
    letter = detail.letter
    click.echo(f"dead letter {letter.dead_id} of {letter.camera}")
    click.echo(f"  source:     {letter.source_stream} {letter.entry_id} (group {letter.group})")
    click.echo(f"  deliveries: {letter.deliveries}")
    click.echo(f"  error:      {letter.last_error}")
    if detail.original is not None:
        click.echo("  original:   " + detail.original.model_dump_json(indent=2))
    elif detail.original_error:
        click.echo(f"  original:   unreadable ({detail.original_error})")


@dlq.command("retry")
@click.argument("camera")
@click.argument("dead_id")
def dlq_retry(camera: str, dead_id: str) -> None:
    """Re-publish the original entry to its stream (with a retry_of header)."""
    from streams.dlq import retry_dead

    new_id = _dlq_call(retry_dead, camera, dead_id)
    _forget_dead_letter(camera, dead_id)
    click.echo(f"re-published as {new_id}")


@dlq.command("drop")
@click.argument("camera")
@click.argument("dead_id")
def dlq_drop(camera: str, dead_id: str) -> None:
    """Delete a dead letter for good."""
    from streams.dlq import drop_dead

    _dlq_call(drop_dead, camera, dead_id)
    _forget_dead_letter(camera, dead_id)
    click.echo("dropped")


def _forget_dead_letter(camera: str, dead_id: str) -> None:
    """Remove the projected row of a dead letter that left its stream."""
    from hsi.app import read_side

    async def forget(engine: Any, _redis: Any, names: Any) -> bool:
        return await read_side.dead_letter_removed(engine, names, camera, dead_id)

    _read_side_call(forget)


if __name__ == "__main__":  # pragma: no cover
    main()
