"""hsi.infra.tls and hsi.infra.certificates: certificates on real files, handshakes over real
loopback sockets, a real uvicorn."""

from __future__ import annotations

import pickle
import re
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hsi.infra.certificates import (
    CertificateGenerationError,
    CertificateLoadError,
    TLSError,
    describe,
    generate_self_signed,
    inspect_certificate,
)
from hsi.infra.tls import (
    TLSConfig,
    TLSConfigError,
    certificate_paths,
    ensure_certificates,
    server_ssl_context,
    uvicorn_ssl_options,
)
from hsi.settings import components
from hsi.settings.model import Settings, TLSMode

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0


def _self_signed(tmp_path: Path, **overrides: Any) -> TLSConfig:
    values: dict[str, Any] = {
        "mode": "self_signed",
        "cert_dir": tmp_path / "certs",
        "hostnames": ("localhost", "hsi.home.arpa"),
        "ip_addresses": ("127.0.0.1", "::1"),
        "days": 825,
    }
    values.update(overrides)
    return TLSConfig(**values)


def _client_context(trust: Path, *, tls12_only: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=trust)
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- a small CA for client certificates ---------------------------------------------------------


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _make_ca_and_client(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA certificate, and a client certificate + key it signed; returns their paths."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSI test client CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camera-1")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = _write_pem(tmp_path / "client-ca.crt", ca_cert, ca_key)
    client_path = _write_pem(tmp_path / "client.crt", client_cert, client_key)
    return ca_path, client_path, client_path.with_suffix(".key")


# --- a one-connection TLS server on a real loopback socket --------------------------------------


class _OneShotServer:
    """Accepts one connection in a thread, handshakes with `context`, answers b"pong:" + data."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self.error: OSError | None = None
        self.version: str | None = None
        self.peer_subject: object = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                with self._context.wrap_socket(conn, server_side=True) as tls:
                    self.version = tls.version()
                    peer = tls.getpeercert()
                    self.peer_subject = peer.get("subject") if peer else None
                    data = tls.recv(64)
                    tls.sendall(b"pong:" + data)
        except OSError as exc:  # ssl.SSLError is an OSError
            self.error = exc

    def __enter__(self) -> _OneShotServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._thread.join(TIMEOUT)
        self._listener.close()
        assert not self._thread.is_alive(), "the test TLS server did not finish"


def _ping(context: ssl.SSLContext, port: int, server_hostname: str = "localhost") -> bytes:
    with (
        socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"ping")
        return tls.recv(64)


# --- generating and inspecting ------------------------------------------------------------------


def test_generate_then_inspect_reports_names_validity_and_serial(tmp_path: Path) -> None:
    """What generate_self_signed returns matches what inspect_certificate reads back."""
    cert_path, key_path = tmp_path / "a" / "hsi.crt", tmp_path / "b" / "hsi.key"
    made = generate_self_signed(
        cert_path,
        key_path,
        hostnames=["localhost", "HSI.home.arpa", "localhost"],
        ip_addresses=["127.0.0.1", "::1", "192.168.1.10"],
        days=90,
        now=NOW,
    )
    read = inspect_certificate(cert_path, now=NOW)
    assert read == made
    assert read.dns_names == ("localhost", "hsi.home.arpa")
    assert read.ip_addresses == ("127.0.0.1", "::1", "192.168.1.10")
    assert read.not_after == NOW + timedelta(days=90)
    assert read.not_before <= NOW
    assert read.not_before.tzinfo is not None
    assert read.days_remaining == 90
    assert read.self_signed
    assert read.subject == read.issuer
    assert "CN=localhost" in read.subject
    assert read.key_type == "EC secp256r1"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert int(read.serial, 16) == cert.serial_number
    assert read.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_generated_certificate_is_a_server_leaf(tmp_path: Path) -> None:
    """The certificate is not a CA, may sign handshakes, and is for server authentication."""
    generate_self_signed(
        tmp_path / "c.crt", tmp_path / "c.key", hostnames=["localhost"], ip_addresses=[], days=1
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "c.crt").read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_days_remaining_goes_negative_after_expiry(tmp_path: Path) -> None:
    """days_remaining counts down with `now` and is negative once the certificate expired."""
    path = tmp_path / "c.crt"
    generate_self_signed(
        path, tmp_path / "c.key", hostnames=["localhost"], ip_addresses=[], days=10, now=NOW
    )
    assert inspect_certificate(path, now=NOW + timedelta(days=3, hours=1)).days_remaining == 6
    expired = inspect_certificate(path, now=NOW + timedelta(days=12))
    assert expired.days_remaining == -2
    assert expired.expired


def test_key_file_is_owner_only_even_when_a_looser_file_existed(tmp_path: Path) -> None:
    """The key is written 0600, replacing (not reusing) an existing world-readable file."""
    key_path = tmp_path / "deep" / "dir" / "hsi.key"
    key_path.parent.mkdir(parents=True)
    key_path.write_bytes(b"old")
    key_path.chmod(0o644)
    generate_self_signed(
        tmp_path / "hsi.crt", key_path, hostnames=["localhost"], ip_addresses=[], days=5
    )
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()
    assert not list(key_path.parent.glob(".*.tmp"))


def test_generate_refuses_bad_names(tmp_path: Path) -> None:
    """An invalid IP address or no names at all is a CertificateGenerationError."""
    with pytest.raises(CertificateGenerationError, match="not-an-ip"):
        generate_self_signed(
            tmp_path / "c.crt", tmp_path / "c.key", hostnames=[], ip_addresses=["not-an-ip"], days=1
        )
    with pytest.raises(CertificateGenerationError, match="at least one"):
        generate_self_signed(
            tmp_path / "c.crt", tmp_path / "c.key", hostnames=[" "], ip_addresses=[], days=1
        )
    assert not (tmp_path / "c.key").exists()


def test_inspect_names_a_file_that_is_not_pem(tmp_path: Path) -> None:
    """A file without a PEM certificate gives a CertificateLoadError naming the file."""
    path = tmp_path / "garbage.crt"
    path.write_text("hello")
    with pytest.raises(CertificateLoadError, match=re.escape("garbage.crt")) as caught:
        inspect_certificate(path)
    assert isinstance(caught.value, TLSError)


# --- ensure_certificates ------------------------------------------------------------------------


def test_ensure_certificates_returns_none_when_disabled(tmp_path: Path) -> None:
    """Disabled TLS needs no files and creates none."""
    config = TLSConfig(mode="disabled", cert_dir=tmp_path / "certs")
    assert ensure_certificates(config) is None
    assert certificate_paths(config) is None
    assert not (tmp_path / "certs").exists()


def test_ensure_certificates_reuses_a_valid_certificate(tmp_path: Path) -> None:
    """A second call keeps the certificate the first call generated."""
    config = _self_signed(tmp_path)
    paths = ensure_certificates(config, now=NOW)
    assert paths == (tmp_path / "certs" / "hsi.crt", tmp_path / "certs" / "hsi.key")
    first = inspect_certificate(paths[0], now=NOW)
    assert ensure_certificates(config, now=NOW + timedelta(days=100)) == paths
    assert inspect_certificate(paths[0], now=NOW).serial == first.serial


def test_ensure_certificates_regenerates_an_expiring_certificate(tmp_path: Path) -> None:
    """Within 30 days of expiry (and after it) a fresh certificate replaces the old one."""
    config = _self_signed(tmp_path, days=825)
    cert_path, _ = ensure_certificates(config, now=NOW) or pytest.fail("TLS enabled")
    old = inspect_certificate(cert_path)
    later = NOW + timedelta(days=825 - 20)
    ensure_certificates(config, now=later)
    renewed = inspect_certificate(cert_path, now=later)
    assert renewed.serial != old.serial
    assert renewed.days_remaining == 825
    much_later = later + timedelta(days=2000)
    ensure_certificates(config, now=much_later)
    assert inspect_certificate(cert_path, now=much_later).days_remaining == 825


def test_ensure_certificates_keeps_short_lived_certificates_until_half_life(
    tmp_path: Path,
) -> None:
    """A 10-day certificate is reused on day 2 and renewed after day 5, not at every start."""
    config = _self_signed(tmp_path, days=10)
    cert_path, _ = ensure_certificates(config, now=NOW) or pytest.fail("TLS enabled")
    serial = inspect_certificate(cert_path).serial
    ensure_certificates(config, now=NOW + timedelta(days=2))
    assert inspect_certificate(cert_path).serial == serial
    ensure_certificates(config, now=NOW + timedelta(days=6))
    assert inspect_certificate(cert_path).serial != serial


def test_ensure_certificates_regenerates_when_names_change(tmp_path: Path) -> None:
    """Adding a host name or IP address that the certificate lacks produces a new certificate."""
    ensure_certificates(_self_signed(tmp_path), now=NOW)
    wider = _self_signed(tmp_path, hostnames=("localhost", "nvr.lan"), ip_addresses=("10.0.0.5",))
    cert_path, _ = ensure_certificates(wider, now=NOW) or pytest.fail("TLS enabled")
    info = inspect_certificate(cert_path)
    assert "nvr.lan" in info.dns_names
    assert info.ip_addresses == ("10.0.0.5",)


def test_ensure_certificates_replaces_corrupt_or_mismatched_files(tmp_path: Path) -> None:
    """An unreadable certificate or a key from another pair is regenerated, not reused."""
    config = _self_signed(tmp_path)
    cert_path, key_path = ensure_certificates(config, now=NOW) or pytest.fail("TLS enabled")
    cert_path.write_text("not a certificate")
    ensure_certificates(config, now=NOW)
    serial = inspect_certificate(cert_path).serial
    generate_self_signed(
        tmp_path / "other.crt", key_path, hostnames=["localhost"], ip_addresses=[], days=5
    )
    ensure_certificates(config, now=NOW)
    assert inspect_certificate(cert_path).serial != serial
    assert server_ssl_context(config) is not None


def test_provided_mode_with_a_missing_file_names_the_path(tmp_path: Path) -> None:
    """A provided certificate that does not exist is a CertificateLoadError naming it."""
    generate_self_signed(
        tmp_path / "real.crt", tmp_path / "real.key", hostnames=["x"], ip_addresses=[], days=5
    )
    missing = tmp_path / "nowhere" / "server.crt"
    config = TLSConfig(mode="provided", cert_path=missing, key_path=tmp_path / "real.key")
    with pytest.raises(CertificateLoadError, match=re.escape(str(missing))) as caught:
        ensure_certificates(config)
    assert "does not exist" in str(caught.value)
    config = TLSConfig(
        mode="provided", cert_path=tmp_path / "real.crt", key_path=tmp_path / "no.key"
    )
    with pytest.raises(CertificateLoadError, match=re.escape("no.key")):
        server_ssl_context(config)


def test_provided_mode_rejects_a_key_from_another_certificate(tmp_path: Path) -> None:
    """A key that does not belong to the certificate is caught before the server starts."""
    for name in ("one", "two"):
        generate_self_signed(
            tmp_path / f"{name}.crt",
            tmp_path / f"{name}.key",
            hostnames=["localhost"],
            ip_addresses=[],
            days=5,
        )
    config = TLSConfig(
        mode="provided", cert_path=tmp_path / "one.crt", key_path=tmp_path / "two.key"
    )
    with pytest.raises(CertificateLoadError, match="does not belong") as caught:
        ensure_certificates(config)
    assert "two.key" in str(caught.value)
    assert "one.crt" in str(caught.value)
    matching = TLSConfig(
        mode="provided", cert_path=tmp_path / "one.crt", key_path=tmp_path / "one.key"
    )
    assert ensure_certificates(matching) == (tmp_path / "one.crt", tmp_path / "one.key")


def test_tls_config_rejects_contradictory_settings(tmp_path: Path) -> None:
    """Unknown modes and versions, provided without files, mTLS without a CA are TLSConfigError."""
    with pytest.raises(TLSConfigError, match="TLS_MODE"):
        TLSConfig(mode="on")
    with pytest.raises(TLSConfigError, match="TLS_MIN_VERSION"):
        TLSConfig(mode="disabled", min_version="TLSv1.1")
    with pytest.raises(TLSConfigError, match="TLS_KEY_PATH"):
        TLSConfig(mode="provided", cert_path=tmp_path / "c.crt")
    with pytest.raises(TLSConfigError, match="TLS_CA_PATH"):
        _self_signed(tmp_path, verify_client=True)
    with pytest.raises(TLSConfigError, match="TLS_IP_ADDRESSES"):
        _self_signed(tmp_path, ip_addresses=("localhost",))


def test_from_settings_maps_the_tls_settings(tmp_path: Path) -> None:
    """components.tls_config copies every TLS_* setting and puts certificates under DATA_DIR."""
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        tls_mode=TLSMode.SELF_SIGNED,
        tls_ca_path=tmp_path / "ca.crt",
        tls_verify_client=True,
        tls_min_version="TLSv1.3",
        tls_hostnames="hsi.lan, localhost",
        tls_ip_addresses=["192.168.1.2"],
        tls_cert_days=30,
    )
    config = components.tls_config(settings)
    assert config == TLSConfig(
        mode="self_signed",
        cert_path=None,
        key_path=None,
        ca_path=tmp_path / "ca.crt",
        verify_client=True,
        min_version="TLSv1.3",
        cert_dir=tmp_path / "certs",
        hostnames=("hsi.lan", "localhost"),
        ip_addresses=("192.168.1.2",),
        days=30,
    )


# --- real handshakes ----------------------------------------------------------------------------


def test_handshake_succeeds_with_the_generated_certificate(tmp_path: Path) -> None:
    """A client trusting the generated certificate connects by host name and by IP address."""
    config = _self_signed(tmp_path)
    context = server_ssl_context(config)
    assert context is not None
    trust = _client_context(tmp_path / "certs" / "hsi.crt")
    with _OneShotServer(context) as server:
        assert _ping(trust, server.port, "localhost") == b"pong:ping"
    assert server.error is None
    assert server.version in ("TLSv1.2", "TLSv1.3")
    with _OneShotServer(context) as server:
        assert _ping(trust, server.port, LOOPBACK) == b"pong:ping"


def test_minimum_tls13_refuses_a_tls12_client(tmp_path: Path) -> None:
    """With min_version TLSv1.3 a client capped at TLS 1.2 fails the handshake."""
    config = _self_signed(tmp_path, min_version="TLSv1.3")
    context = server_ssl_context(config)
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    trust = tmp_path / "certs" / "hsi.crt"
    with _OneShotServer(context) as server, pytest.raises(ssl.SSLError):
        _ping(_client_context(trust, tls12_only=True), server.port)
    assert isinstance(server.error, ssl.SSLError)
    with _OneShotServer(context) as server:
        assert _ping(_client_context(trust), server.port) == b"pong:ping"
    assert server.version == "TLSv1.3"


def test_verify_client_refuses_a_client_without_certificate(tmp_path: Path) -> None:
    """With verify_client, a client that presents no certificate does not get through."""
    ca_path, _, _ = _make_ca_and_client(tmp_path)
    context = server_ssl_context(_self_signed(tmp_path, verify_client=True, ca_path=ca_path))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    trust = _client_context(tmp_path / "certs" / "hsi.crt")
    with _OneShotServer(context) as server, pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3 finishes the client's side of the handshake first; the refusal arrives on read.
        _ping(trust, server.port)
    assert isinstance(server.error, ssl.SSLError)


def test_verify_client_accepts_a_certificate_signed_by_the_ca(tmp_path: Path) -> None:
    """With verify_client, a client certificate signed by TLS_CA_PATH completes the exchange."""
    ca_path, client_cert, client_key = _make_ca_and_client(tmp_path)
    context = server_ssl_context(_self_signed(tmp_path, verify_client=True, ca_path=ca_path))
    assert context is not None
    trust = _client_context(tmp_path / "certs" / "hsi.crt")
    trust.load_cert_chain(client_cert, client_key)
    with _OneShotServer(context) as server:
        assert _ping(trust, server.port) == b"pong:ping"
    assert server.error is None
    assert server.peer_subject == ((("commonName", "camera-1"),),)


# --- uvicorn ------------------------------------------------------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@contextmanager
def _uvicorn_running(options: Mapping[str, Any]) -> Iterator[int]:
    """Run uvicorn with `options` on a loopback port in a thread; stop it on exit."""
    listener = socket.create_server((LOOPBACK, 0))
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        _hello,
        log_config=None,
        log_level="critical",
        lifespan="off",
        http="h11",
        ws="none",
        loop="asyncio",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def _https_get(context: ssl.SSLContext, port: int) -> tuple[str | None, bytes]:
    with (
        socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := tls.recv(4096):
            chunks.append(chunk)
        return tls.version(), b"".join(chunks)


def test_uvicorn_options_enforce_the_minimum_version(tmp_path: Path) -> None:
    """uvicorn started with uvicorn_ssl_options refuses TLS 1.2 when TLSv1.3 is the minimum."""
    options = uvicorn_ssl_options(_self_signed(tmp_path, min_version="TLSv1.3"))
    trust = tmp_path / "certs" / "hsi.crt"
    with _uvicorn_running(options) as port:
        version, response = _https_get(_client_context(trust), port)
        assert version == "TLSv1.3"
        assert response.startswith(b"HTTP/1.1 200")
        assert response.endswith(b"hello")
        with pytest.raises(ssl.SSLError):
            _https_get(_client_context(trust, tls12_only=True), port)
    # Control: the same files without HSI's context factory let TLS 1.2 through, so the refusal
    # above comes from the factory and not from OpenSSL defaults.
    plain = {key: value for key, value in options.items() if key != "ssl_context_factory"}
    with _uvicorn_running(plain) as port:
        version, _ = _https_get(_client_context(trust, tls12_only=True), port)
        assert version == "TLSv1.2"


def test_uvicorn_options_describe_mtls_and_survive_pickling(tmp_path: Path) -> None:
    """The options name the files, require client certificates, and pickle for worker processes."""
    ca_path, _, _ = _make_ca_and_client(tmp_path)
    config = _self_signed(tmp_path, verify_client=True, ca_path=ca_path)
    options = uvicorn_ssl_options(config)
    assert options["ssl_certfile"] == str(tmp_path / "certs" / "hsi.crt")
    assert options["ssl_keyfile"] == str(tmp_path / "certs" / "hsi.key")
    assert options["ssl_ca_certs"] == str(ca_path)
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    factory = pickle.loads(pickle.dumps(options["ssl_context_factory"]))  # noqa: S301 - our bytes
    built = factory(None, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert built.minimum_version is ssl.TLSVersion.TLSv1_2
    assert uvicorn_ssl_options(TLSConfig(mode="disabled")) == {}


# --- presentation -------------------------------------------------------------------------------


def test_describe_summarises_the_certificate(tmp_path: Path) -> None:
    """describe shows subject, validity, names, fingerprint, and flags an expired certificate."""
    path = tmp_path / "c.crt"
    generate_self_signed(
        path,
        tmp_path / "c.key",
        hostnames=["localhost"],
        ip_addresses=["127.0.0.1"],
        days=400,
        now=NOW,
    )
    text = describe(inspect_certificate(path, now=NOW))
    first, *rest = text.splitlines()
    assert first == f"Certificate {path}"
    fields = dict(line.strip().split(": ", 1) for line in rest)
    assert fields["Issuer"].endswith("(self-signed)")
    assert fields["Status"].strip() == "valid, 400 days left"
    assert fields["DNS names"].strip() == "localhost"
    assert fields["IP addresses"].strip() == "127.0.0.1"
    assert fields["Valid until"].strip() == "2027-02-19 12:00:00 UTC"
    assert "EXPIRED 5 days ago" in describe(
        inspect_certificate(path, now=NOW + timedelta(days=405))
    )


def test_a_provided_key_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A provided private key with any group or other permission starts HSI with a warning that
    says how to fix it; mode 600 starts quietly."""
    cert, key = tmp_path / "one.crt", tmp_path / "one.key"
    generate_self_signed(cert, key, hostnames=["localhost"], ip_addresses=[], days=30)
    config = TLSConfig(mode="provided", cert_path=cert, key_path=key)
    key.chmod(0o644)
    with caplog.at_level("WARNING"):
        ensure_certificates(config)
    assert any(
        "can be read by other users" in r.getMessage() and "chmod 600" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    key.chmod(0o600)
    with caplog.at_level("WARNING"):
        ensure_certificates(config)
    assert not [r for r in caplog.records if "other users" in r.getMessage()]
