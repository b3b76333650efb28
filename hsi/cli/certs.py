"""`hsi certs`: generate the self-signed TLS certificate, or show a certificate."""

from __future__ import annotations

import click

from hsi.cli.common import cli_settings, click_errors


@click.group()
def certs() -> None:
    """TLS certificates."""


@certs.command("generate")
@click.option("--force", is_flag=True, help="Replace an existing certificate.")
def certs_generate(force: bool) -> None:
    """Generate a self-signed certificate for the configured host names and addresses."""
    from hsi.infra import certificates
    from hsi.settings import components

    settings = cli_settings()
    config = components.tls_config(settings)
    cert, key = config.cert_dir / "hsi.crt", config.cert_dir / "hsi.key"
    if cert.exists() and not force:
        raise click.ClickException(f"{cert} exists; pass --force to replace it")
    with click_errors(certificates.TLSError):
        info = certificates.generate_self_signed(
            cert,
            key,
            hostnames=config.hostnames,
            ip_addresses=config.ip_addresses,
            days=config.days,
        )
    click.echo(f"certificate: {cert}\nkey:         {key}")
    click.echo(certificates.describe(info))


@certs.command("show")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def certs_show(path: str | None) -> None:
    """Show a certificate (default: the configured or generated one)."""
    from pathlib import Path

    from hsi.infra import certificates
    from hsi.settings import components

    settings = cli_settings()
    config = components.tls_config(settings)
    target = Path(path) if path else (config.cert_path or config.cert_dir / "hsi.crt")
    with click_errors(certificates.TLSError):
        click.echo(certificates.describe(certificates.inspect_certificate(target)))
