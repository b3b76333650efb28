"""TLS for the HSI API: self-signed or provided certificates, server contexts, uvicorn options.

Three modes, chosen by `TLS_MODE`:

    disabled      plain HTTP
    self_signed   HSI keeps its own certificate in DATA_DIR/certs (hsi.crt, hsi.key) and renews it
                  when it is missing, unreadable, expired, close to expiry or no longer names every
                  host in TLS_HOSTNAMES / TLS_IP_ADDRESSES
    provided      the operator's TLS_CERT_PATH (leaf first, then the chain) and TLS_KEY_PATH

`TLS_VERIFY_CLIENT=true` turns on mutual TLS: clients must present a certificate signed by a CA in
`TLS_CA_PATH`. `TLS_MIN_VERSION` is enforced on every server context built here, including the one
uvicorn builds (see `uvicorn_ssl_options`).

Nothing here touches the file system at import time; `ensure_certificates` is the one place that
writes, and `server_ssl_context` / `uvicorn_ssl_options` call it so a caller needs a single step.
Reading, generating and describing the certificates themselves is `hsi.infra.certificates`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from hsi.infra.certificates import (
    RENEW_WITHIN,
    CertificateGenerationError,
    CertificateLoadError,
    TLSError,
    aware_utc,
    certificate_info,
    generate_self_signed,
    load_certificates,
    load_pair,
    split_names,
)

if TYPE_CHECKING:
    from uvicorn.config import Config as UvicornConfig


logger = logging.getLogger(__name__)

MODES = ("disabled", "self_signed", "provided")
MIN_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
SELF_SIGNED_CERT_NAME = "hsi.crt"
SELF_SIGNED_KEY_NAME = "hsi.key"
_UVICORN_MIN_VERSION = "0.48"  # the declared floor (0.47 added ssl_context_factory)


class TLSConfigError(TLSError):
    """The TLS settings contradict each other or name something HSI does not support."""


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSConfig:
    """Everything `hsi.infra.tls` needs, independent of how the settings were read."""

    mode: str  # "disabled" | "self_signed" | "provided"
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    verify_client: bool = False
    min_version: str = "TLSv1.2"  # "TLSv1.2" | "TLSv1.3"
    cert_dir: Path = Path(".hsi") / "certs"  # where self-signed files go
    hostnames: tuple[str, ...] = ("localhost",)
    ip_addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    days: int = 825

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TLSConfigError(
                f"TLS_MODE={self.mode!r} is not a TLS mode; use one of {', '.join(MODES)}"
            )
        if self.min_version not in MIN_VERSIONS:
            raise TLSConfigError(
                f"TLS_MIN_VERSION={self.min_version!r} is not supported; "
                f"use one of {', '.join(MIN_VERSIONS)}"
            )
        if self.days < 1:
            raise TLSConfigError(
                f"TLS_CERT_DAYS={self.days} would make certificates that are already expired; "
                "use a positive number of days (825 is the default)"
            )
        if self.mode == "provided" and (self.cert_path is None or self.key_path is None):
            raise TLSConfigError(
                "TLS_MODE=provided needs both TLS_CERT_PATH and TLS_KEY_PATH; set them to your "
                "PEM certificate and key, or use TLS_MODE=self_signed"
            )
        if self.mode != "disabled" and self.verify_client and self.ca_path is None:
            raise TLSConfigError(
                "TLS_VERIFY_CLIENT=true needs TLS_CA_PATH, the CA that signs client certificates; "
                "set it, or set TLS_VERIFY_CLIENT=false"
            )
        if self.mode == "self_signed":
            _dns, _ips = split_names(self.hostnames, self.ip_addresses, TLSConfigError)
            if not _dns and not _ips:
                raise TLSConfigError(
                    "TLS_MODE=self_signed needs at least one name in TLS_HOSTNAMES or "
                    "TLS_IP_ADDRESSES for the certificate; add the names clients use to reach HSI"
                )

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"


def certificate_paths(config: TLSConfig) -> tuple[Path, Path] | None:
    """Where the server certificate and key are (or will be); None when TLS is disabled."""
    if config.mode == "disabled":
        return None
    if config.mode == "self_signed":
        return config.cert_dir / SELF_SIGNED_CERT_NAME, config.cert_dir / SELF_SIGNED_KEY_NAME
    if config.cert_path is None or config.key_path is None:  # TLSConfig refuses this already
        raise TLSConfigError(
            "TLS_MODE=provided needs both TLS_CERT_PATH and TLS_KEY_PATH; set them to your PEM "
            "certificate and key, or use TLS_MODE=self_signed"
        )
    return config.cert_path, config.key_path


def _client_ca_path(config: TLSConfig) -> Path:
    if config.ca_path is None:  # TLSConfig refuses this already
        raise TLSConfigError(
            "TLS_VERIFY_CLIENT=true needs TLS_CA_PATH, the CA that signs client certificates; "
            "set it, or set TLS_VERIFY_CLIENT=false"
        )
    return config.ca_path


# --- ensuring -----------------------------------------------------------------------------------


def _renewal_window(days: int) -> timedelta:
    # A certificate made for fewer than 60 days would always look "expiring within 30 days" and be
    # regenerated at every start; for those, renew in the second half of the lifetime instead.
    return min(RENEW_WITHIN, timedelta(days=days) / 2)


def _why_regenerate(
    cert_path: Path, key_path: Path, config: TLSConfig, now: datetime
) -> str | None:
    """The reason the self-signed pair cannot be reused, or None when it can."""
    if not cert_path.exists() or not key_path.exists():
        return "no certificate yet"
    try:
        cert = load_pair(cert_path, key_path)
        info = certificate_info(cert, cert_path, now)
    except CertificateLoadError as exc:
        return str(exc)
    if info.not_before > now:
        return f"it is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC (clock changed?)"
    if info.not_after <= now:
        return f"it expired on {info.not_after:%Y-%m-%d}"
    if info.not_after - now < _renewal_window(config.days):
        return f"it expires soon, on {info.not_after:%Y-%m-%d}"
    dns, ips = split_names(config.hostnames, config.ip_addresses, TLSConfigError)
    have_dns = {n.lower() for n in info.dns_names}
    have_ips = {ipaddress.ip_address(ip) for ip in info.ip_addresses}
    missing = [n for n in dns if n not in have_dns] + [str(ip) for ip in ips if ip not in have_ips]
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` so that processes starting together do not both
    regenerate and end up with one's key next to the other's certificate."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CertificateGenerationError(
            f"cannot create certificate folder {directory} ({exc.strerror or exc}); create it "
            "yourself or point DATA_DIR somewhere the user running HSI may write"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def ensure_certificates(config: TLSConfig, now: datetime | None = None) -> tuple[Path, Path] | None:
    """Make sure a usable certificate and key exist; return their paths, or None when disabled.

    self_signed: generate into `cert_dir` when needed, otherwise reuse. provided: load both files
    and check that the key belongs to the certificate. With `verify_client`, the CA file is
    loaded too.
    """
    paths = certificate_paths(config)
    if paths is None:
        return None
    cert_path, key_path = paths
    current = aware_utc(now)
    if config.mode == "self_signed":
        with _locked(config.cert_dir):
            reason = _why_regenerate(cert_path, key_path, config, current)
            if reason is not None:
                info = generate_self_signed(
                    cert_path,
                    key_path,
                    hostnames=config.hostnames,
                    ip_addresses=config.ip_addresses,
                    days=config.days,
                    now=current,
                )
                logger.info(
                    "generated self-signed TLS certificate %s (%s), valid until %s, because %s",
                    cert_path,
                    ", ".join(info.dns_names + info.ip_addresses),
                    f"{info.not_after:%Y-%m-%d}",
                    reason,
                )
    else:
        info = certificate_info(load_pair(cert_path, key_path), cert_path, current)
        warn_if_exposed(key_path)
        if info.expired:
            logger.warning(
                "TLS certificate %s expired on %s; clients will refuse it until it is replaced",
                cert_path,
                f"{info.not_after:%Y-%m-%d}",
            )
        elif info.not_after - current < RENEW_WITHIN:
            logger.warning(
                "TLS certificate %s expires in %d days (%s); renew it soon",
                cert_path,
                info.days_remaining,
                f"{info.not_after:%Y-%m-%d}",
            )
    if config.verify_client:
        load_certificates(_client_ca_path(config), "client CA file")
    return cert_path, key_path


def warn_if_exposed(key_path: Path) -> bool:
    """Log a warning when a provided private key can be read or written by other users (group or
    others have any permission on it); whether it warned."""
    try:
        mode = key_path.stat().st_mode
    except OSError:
        return False
    if not mode & 0o077:
        return False
    logger.warning(
        "TLS key %s can be read by other users of this machine (mode %o); anyone who reads it can "
        "impersonate HSI. Fix: chmod 600 %s",
        key_path,
        mode & 0o777,
        key_path,
    )
    return True


# --- server contexts ----------------------------------------------------------------------------


def _apply_policy(context: ssl.SSLContext, config: TLSConfig) -> None:
    """The protocol policy shared by every server context HSI builds."""
    context.minimum_version = MIN_VERSIONS[config.min_version]
    # TLS 1.2 renegotiation is a CPU-exhaustion lever for clients and nothing HSI needs.
    context.options |= ssl.OP_NO_RENEGOTIATION


def server_ssl_context(config: TLSConfig) -> ssl.SSLContext | None:
    """A server-side `SSLContext` for the configured certificate; None when TLS is disabled.

    Calls `ensure_certificates` first, so a self-signed certificate is created or renewed here.
    """
    paths = ensure_certificates(config)
    if paths is None:
        return None
    cert_path, key_path = paths
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context, config)
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateLoadError(
            f"OpenSSL rejected certificate {cert_path} with key {key_path} ({exc}); check that "
            "the certificate file holds the server certificate followed by its chain"
        ) from exc
    if config.verify_client:
        ca_path = _client_ca_path(config)
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateLoadError(
                f"OpenSSL rejected client CA file {ca_path} ({exc}); it must hold the PEM "
                "certificate(s) of the CA that signs client certificates"
            ) from exc
    return context


def _uvicorn_context_factory(
    config: TLSConfig,
    uvicorn_config: UvicornConfig,
    default_factory: Callable[[], ssl.SSLContext],
) -> ssl.SSLContext:
    # uvicorn's own context (certificate, key, client CA, cert_reqs, ALPN), plus HSI's policy.
    context = default_factory()
    _apply_policy(context, config)
    return context


class UvicornSSLOptions(TypedDict, total=False):
    """`uvicorn.Config` keyword arguments; a TypedDict so `uvicorn.run(app, **options)` type-checks
    (a plain `dict[str, object]` would not under mypy --strict)."""

    ssl_certfile: str
    ssl_keyfile: str
    ssl_ca_certs: str | None
    ssl_cert_reqs: int
    ssl_context_factory: Callable[[UvicornConfig, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def uvicorn_ssl_options(config: TLSConfig) -> UvicornSSLOptions:
    """Keyword arguments for `uvicorn.Config` / `uvicorn.run`; empty when TLS is disabled.

    uvicorn has no "minimum TLS version" option: it builds `ssl.SSLContext(ssl_version)` and
    `ssl_version` selects a protocol, not a floor (`PROTOCOL_TLSv1_2` would also forbid TLS 1.3,
    and is deprecated), while `ssl_ciphers` does not govern TLS 1.3 at all. So the options carry
    an `ssl_context_factory` (uvicorn 0.47+) that takes the context uvicorn built from the other
    options and sets `minimum_version` on it before the server listens. The factory is a
    `functools.partial` of a module-level function over the frozen config, so it pickles for
    `workers > 1` and `reload`. Older uvicorn gets a `TLSConfigError` rather than a server that
    silently accepts older protocol versions.
    """
    paths = ensure_certificates(config)
    if paths is None:
        return UvicornSSLOptions()
    import uvicorn

    if "ssl_context_factory" not in inspect.signature(uvicorn.Config.__init__).parameters:
        raise TLSConfigError(
            f"uvicorn {uvicorn.__version__} cannot be told a minimum TLS version, so "
            f"TLS_MIN_VERSION={config.min_version} would not be enforced; install "
            f"uvicorn>={_UVICORN_MIN_VERSION}"
        )
    cert_path, key_path = paths
    verify = config.verify_client
    return UvicornSSLOptions(
        ssl_certfile=str(cert_path),
        ssl_keyfile=str(key_path),
        ssl_ca_certs=str(_client_ca_path(config)) if verify else None,
        ssl_cert_reqs=int(ssl.CERT_REQUIRED if verify else ssl.CERT_NONE),
        ssl_context_factory=functools.partial(_uvicorn_context_factory, config),
    )
