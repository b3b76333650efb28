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
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
RENEW_WITHIN = timedelta(days=30)
# Backdate new certificates a little so that devices whose clocks run slightly behind (phones,
# cameras on the LAN) do not reject a certificate generated a moment ago as "not yet valid".
_BACKDATE = timedelta(minutes=5)
_UVICORN_MIN_VERSION = "0.47"


class TLSError(Exception):
    """Base class of every error raised by `hsi.tls`."""


class CertificateGenerationError(TLSError):
    """A self-signed certificate or its key could not be created or written."""


class CertificateLoadError(TLSError):
    """A certificate, key or CA file is missing, unreadable, not valid PEM, or does not match."""


class TLSConfigError(TLSError):
    """The TLS settings contradict each other or name something HSI does not support."""


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSConfig:
    """Everything `hsi.tls` needs, independent of how the settings were read."""

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
            _dns, _ips = _split_names(self.hostnames, self.ip_addresses, TLSConfigError)
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


# --- certificate facts --------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator wants to know about a certificate; see `describe`."""

    path: Path
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    not_before: datetime  # aware, UTC
    not_after: datetime  # aware, UTC
    serial: str  # lower-case hex
    days_remaining: int  # whole days until not_after; negative once expired
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    fingerprint_sha256: str  # AB:CD:… as browsers show it
    self_signed: bool
    key_type: str  # "EC secp256r1", "RSA 2048", …

    @property
    def expired(self) -> bool:
        return self.days_remaining < 0


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now={now!r} has no time zone; pass an aware datetime such as one in UTC")
    return now.astimezone(UTC)


def _key_type(key: PublicKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _info(cert: x509.Certificate, path: Path, now: datetime) -> CertificateInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        dns_names: tuple[str, ...] = ()
        ip_addresses: tuple[str, ...] = ()
    except ValueError as exc:
        raise CertificateLoadError(
            f"certificate {path} has malformed extensions ({exc}); "
            "replace it with a certificate from a standard tool or CA"
        ) from exc
    else:
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    not_after = cert.not_valid_after_utc
    return CertificateInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        serial=format(cert.serial_number, "x"),
        days_remaining=(not_after - now) // timedelta(days=1),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        self_signed=_is_self_signed(cert),
        key_type=_key_type(cert.public_key()),
    )


# --- reading PEM files --------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CertificateLoadError(
            f"{what} {path} does not exist; check the path in the settings, or use "
            "TLS_MODE=self_signed to let HSI create one"
        ) from exc
    except IsADirectoryError as exc:
        raise CertificateLoadError(
            f"{what} {path} is a folder, not a file; point the setting at the PEM file inside it"
        ) from exc
    except PermissionError as exc:
        raise CertificateLoadError(
            f"{what} {path} cannot be read by this user (permission denied); make it readable "
            "by the user that runs HSI"
        ) from exc
    except OSError as exc:
        raise CertificateLoadError(
            f"{what} {path} could not be read ({exc.strerror or exc}); check the disk and path"
        ) from exc


def _load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateLoadError(
            f"{what} {path} is not a PEM certificate ({exc}); it must contain "
            "'-----BEGIN CERTIFICATE-----' blocks (convert DER with "
            "'openssl x509 -inform der -in FILE -out FILE.pem')"
        ) from exc
    if not certs:  # pragma: no cover - cryptography raises on an empty file
        raise CertificateLoadError(f"{what} {path} holds no certificate; replace the file")
    return certs


def _load_private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "private key file")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise CertificateLoadError(
            f"private key file {path} is encrypted with a passphrase, which HSI cannot enter at "
            "start-up; write an unencrypted copy ('openssl pkey -in KEY -out KEY.plain') and "
            "protect it with file permissions (chmod 600)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateLoadError(
            f"private key file {path} is not a usable PEM private key ({exc}); it must contain a "
            "'-----BEGIN PRIVATE KEY-----' (or RSA/EC PRIVATE KEY) block"
        ) from exc


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pair(cert_path: Path, key_path: Path) -> x509.Certificate:
    """Load the leaf certificate and its key; raise when the key does not belong to it."""
    leaf = _load_certificates(cert_path, "certificate file")[0]
    key = _load_private_key(key_path)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise CertificateLoadError(
            f"private key file {key_path} does not belong to certificate file {cert_path} (their "
            "public keys differ); use the key the certificate was issued for, and check that the "
            "certificate file starts with the server certificate, not an intermediate"
        )
    return leaf


def inspect_certificate(path: Path, now: datetime | None = None) -> CertificateInfo:
    """Read the first certificate in a PEM file and describe it."""
    path = Path(path)
    return _info(_load_certificates(path, "certificate file")[0], path, _utc(now))


# --- generating ---------------------------------------------------------------------------------


def _split_names(
    hostnames: Iterable[str],
    ip_addresses: Iterable[str],
    error: type[TLSError],
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Normalise names, dropping blanks and duplicates; an IP in the host names counts as an IP."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in hostnames:
        name = raw.strip().rstrip(".").lower()
        if not name:
            continue
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            if name not in dns:
                dns.append(name)
        else:
            if ip not in ips:
                ips.append(ip)
    for raw in ip_addresses:
        text = raw.strip()
        if not text:
            continue
        try:
            ip = ipaddress.ip_address(text)
        except ValueError as exc:
            raise error(
                f"TLS_IP_ADDRESSES entry {text!r} is not an IP address; list addresses such as "
                "192.168.1.10 or ::1 there and host names in TLS_HOSTNAMES"
            ) from exc
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a fresh temporary file created with `mode`, then rename it over `path`.

    The rename means a pre-existing file with looser permissions is replaced, never reused, and
    readers never see half a file.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    *,
    hostnames: Iterable[str],
    ip_addresses: Iterable[str],
    days: int,
    now: datetime | None = None,
) -> CertificateInfo:
    """Create a self-signed server certificate for the given names; the key is written 0600."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    dns, ips = _split_names(hostnames, ip_addresses, CertificateGenerationError)
    if not dns and not ips:
        raise CertificateGenerationError(
            "a certificate needs at least one host name or IP address; pass the names clients "
            "use to reach HSI (TLS_HOSTNAMES / TLS_IP_ADDRESSES)"
        )
    if days < 1:
        raise CertificateGenerationError(
            f"days={days} would create an expired certificate; pass a positive number of days"
        )
    # Certificates store whole seconds; dropping the fraction keeps not_after exactly `days` away.
    start = _utc(now).replace(microsecond=0)

    # EC P-256 rather than RSA 2048: generation takes about a millisecond instead of tens to
    # hundreds (start-up and renewals stay instant), it gives ~128-bit security against RSA 2048's
    # ~112, and handshakes are smaller. Every current browser, curl, Python and Go client supports
    # ECDSA certificates with TLS 1.2 and 1.3.
    key = ec.generate_private_key(ec.SECP256R1())
    first = dns[0] if dns else str(ips[0])
    common_name = first if len(first) <= 64 else "hsi"  # X.509 caps CN at 64 characters
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HSI self-signed"),
        ]
    )
    try:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    except ValueError as exc:
        raise CertificateGenerationError(
            f"a host name in TLS_HOSTNAMES cannot go into a certificate ({exc}); write "
            "internationalised names in their xn-- (punycode) form"
        ) from exc
    alt_names += [x509.IPAddress(ip) for ip in ips]
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    for target in (key_path, cert_path):
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CertificateGenerationError(
                f"cannot create folder {target.parent} for {target.name} "
                f"({exc.strerror or exc}); create it yourself or point DATA_DIR somewhere writable"
            ) from exc
    # Key first: if the process dies in between, the next start sees a key that does not match
    # the old certificate and generates a fresh pair.
    for target, data, mode in ((key_path, key_pem, 0o600), (cert_path, cert_pem, 0o644)):
        try:
            _write_atomically(target, data, mode)
        except OSError as exc:
            raise CertificateGenerationError(
                f"cannot write {target} ({exc.strerror or exc}); check that the user running HSI "
                f"may write to {target.parent} and that the disk is not full"
            ) from exc
    return _info(cert, cert_path, start)


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
        cert = _load_pair(cert_path, key_path)
        info = _info(cert, cert_path, now)
    except CertificateLoadError as exc:
        return str(exc)
    if info.not_before > now:
        return f"it is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC (clock changed?)"
    if info.not_after <= now:
        return f"it expired on {info.not_after:%Y-%m-%d}"
    if info.not_after - now < _renewal_window(config.days):
        return f"it expires soon, on {info.not_after:%Y-%m-%d}"
    dns, ips = _split_names(config.hostnames, config.ip_addresses, TLSConfigError)
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
    current = _utc(now)
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
        info = _info(_load_pair(cert_path, key_path), cert_path, current)
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
        _load_certificates(_client_ca_path(config), "client CA file")
    return cert_path, key_path


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


# --- presentation -------------------------------------------------------------------------------


def describe(info: CertificateInfo) -> str:
    """A multi-line summary for `hsi certs show`."""
    if info.expired:
        ago = -info.days_remaining
        status = f"EXPIRED {ago} day{'s' if ago != 1 else ''} ago — replace or regenerate it"
    elif info.days_remaining < RENEW_WITHIN.days:
        status = f"expires in {info.days_remaining} days — renew soon"
    else:
        status = f"valid, {info.days_remaining} days left"
    issuer = f"{info.issuer} (self-signed)" if info.self_signed else info.issuer
    rows = [
        ("Subject", info.subject),
        ("Issuer", issuer),
        ("Serial", info.serial),
        ("Valid from", f"{info.not_before:%Y-%m-%d %H:%M:%S} UTC"),
        ("Valid until", f"{info.not_after:%Y-%m-%d %H:%M:%S} UTC"),
        ("Status", status),
        ("DNS names", ", ".join(info.dns_names) or "(none)"),
        ("IP addresses", ", ".join(info.ip_addresses) or "(none)"),
        ("Key", info.key_type),
        ("SHA-256", info.fingerprint_sha256),
    ]
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"Certificate {info.path}"]
    lines += [f"  {label + ':':<{width}} {value}" for label, value in rows]
    return "\n".join(lines)
