"""X.509 certificates on disk: reading and describing them, and generating self-signed ones.

`inspect_certificate` reads a PEM file and returns a `CertificateInfo`; `describe` turns that
into the lines `hsi certs show` prints. `generate_self_signed` creates an EC P-256 server
certificate for a set of host names and addresses and writes it with its key (0600). Every error
is a `TLSError` whose message names the file and the fix. When a certificate is needed and what
the server does with it is `hsi.infra.tls`'s concern.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_WITHIN = timedelta(days=30)
# Backdate new certificates a little so that devices whose clocks run slightly behind (phones,
# cameras on the LAN) do not reject a certificate generated a moment ago as "not yet valid".
_BACKDATE = timedelta(minutes=5)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class TLSError(Exception):
    """Base class of every error raised by `hsi.infra.tls` and `hsi.infra.certificates`."""


class CertificateGenerationError(TLSError):
    """A self-signed certificate or its key could not be created or written."""


class CertificateLoadError(TLSError):
    """A certificate, key or CA file is missing, unreadable, not valid PEM, or does not match."""


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


def aware_utc(now: datetime | None) -> datetime:
    """`now` in UTC, or the current time when None; a naive `now` is refused."""
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


def certificate_info(cert: x509.Certificate, path: Path, now: datetime) -> CertificateInfo:
    """The facts of `cert` (read from `path`) as of `now`."""
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


def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every certificate in the PEM file at `path` (`what` names the file in errors)."""
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


def load_pair(cert_path: Path, key_path: Path) -> x509.Certificate:
    """Load the leaf certificate and its key; raise when the key does not belong to it."""
    leaf = load_certificates(cert_path, "certificate file")[0]
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
    return certificate_info(load_certificates(path, "certificate file")[0], path, aware_utc(now))


# --- generating ---------------------------------------------------------------------------------


def split_names(
    hostnames: Iterable[str],
    ip_addresses: Iterable[str],
    error: type[TLSError],
) -> tuple[list[str], list[IPAddress]]:
    """Normalise names, dropping blanks and duplicates; an IP in the host names counts as an IP."""
    dns: list[str] = []
    ips: list[IPAddress] = []
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


def _subject(dns: list[str], ips: list[IPAddress]) -> x509.Name:
    first = dns[0] if dns else str(ips[0])
    common_name = first if len(first) <= 64 else "hsi"  # X.509 caps CN at 64 characters
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HSI self-signed"),
        ]
    )


def _alt_names(dns: list[str], ips: list[IPAddress]) -> x509.SubjectAlternativeName:
    try:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    except ValueError as exc:
        raise CertificateGenerationError(
            f"a host name in TLS_HOSTNAMES cannot go into a certificate ({exc}); write "
            "internationalised names in their xn-- (punycode) form"
        ) from exc
    alt_names += [x509.IPAddress(ip) for ip in ips]
    return x509.SubjectAlternativeName(alt_names)


def _server_key_usage() -> x509.KeyUsage:
    """A TLS server key signs the handshake (ECDHE) and does nothing else."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _build_certificate(
    key: ec.EllipticCurvePrivateKey,
    dns: list[str],
    ips: list[IPAddress],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A server certificate for `dns` and `ips`, signed by its own `key`."""
    name = _subject(dns, ips)
    alt_names = _alt_names(dns, ips)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(alt_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_server_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256())


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """Write the key (0600) and then the certificate (0644), creating their folders (0700)."""
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
    dns, ips = split_names(hostnames, ip_addresses, CertificateGenerationError)
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
    start = aware_utc(now).replace(microsecond=0)

    # EC P-256 rather than RSA 2048: generation takes about a millisecond instead of tens to
    # hundreds (start-up and renewals stay instant), it gives ~128-bit security against RSA 2048's
    # ~112, and handshakes are smaller. Every current browser, curl, Python and Go client supports
    # ECDSA certificates with TLS 1.2 and 1.3.
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_certificate(key, dns, ips, start - _BACKDATE, start + timedelta(days=days))
    _write_pair(cert_path, key_path, cert, key)
    return certificate_info(cert, cert_path, start)


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
