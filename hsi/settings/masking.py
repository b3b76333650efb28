"""Settings shown without their secrets: masked values and URL passwords, and validation errors
that name the variable, the (masked) value and what is accepted."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

SECRET_FIELDS = frozenset(
    {"llm_api_key", "api_keys", "smtp_password", "webhook_secret", "ftp_accounts"}
)
_URL_FIELDS = (
    "database_url",
    "redis_url",
    "mqtt_url",
    "default_webhook_url",
    "llm_url",
    "rtdetr_url",
    "public_base_url",
)
_WEB_SCHEMES = ("http", "https")
# Query parameters that carry credentials, by a part of their name.
_SECRET_PARAMS = ("token", "key", "secret", "password", "passwd", "sig", "auth", "code")
_TOKEN_SEGMENT = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-.~]{16,}$")


def mask_url_password(url: str) -> str:
    """A URL with its credentials masked, the rest kept: `scheme://user:secret@host` →
    `scheme://user:***@host`; for http(s) also a bare `https://TOKEN@host` → `https://***@host`,
    the values of credential-like query parameters (`?token=…`, `api_key=…`, `sig=…`) and path
    segments that look like tokens (16+ letters and digits, as in webhook URLs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    web = scheme.lower() in _WEB_SCHEMES
    where, hash_sep, fragment = rest.partition("#")
    where, query_sep, query = where.partition("?")
    authority, slash, path = where.partition("/")
    if "@" in authority:
        creds, _, host = authority.rpartition("@")
        if ":" in creds:
            authority = f"{creds.split(':', 1)[0]}:***@{host}"
        elif web:
            authority = f"***@{host}"
    if web:
        path = "/".join("***" if _TOKEN_SEGMENT.match(part) else part for part in path.split("/"))
        query = "&".join(_mask_param(pair) for pair in query.split("&")) if query else query
    return f"{scheme}://{authority}{slash}{path}{query_sep}{query}{hash_sep}{fragment}"


def _mask_param(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if eq and value and any(part in name.lower() for part in _SECRET_PARAMS):
        return f"{name}=***"
    return pair


def masked_values(values: dict[str, Any]) -> dict[str, Any]:
    """Settings dumped as JSON-ready values, with secrets and URL passwords masked."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in SECRET_FIELDS and value:
            out[name] = ["***"] * len(value) if isinstance(value, list) else "***"
        elif name in _URL_FIELDS and isinstance(value, str):
            out[name] = mask_url_password(value)
        else:
            out[name] = value
    return out


def _env_name(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]).upper() if loc else "(settings)"


def format_errors(error: ValidationError) -> str:
    """pydantic's validation errors as one message, a line per variable, secrets masked."""
    lines = ["invalid HSI configuration:"]
    for item in error.errors():
        name = _env_name(item.get("loc", ()))
        raw = item.get("input")
        if name.lower() in SECRET_FIELDS or "PASSWORD" in name or "KEY" in name:
            shown = "***"
        elif isinstance(raw, (str, int, float, bool)):
            shown = repr(mask_url_password(str(raw)) if isinstance(raw, str) else raw)
        else:
            shown = None
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        if shown is None or not item.get("loc"):
            lines.append(f"  {name}: {message}")
        else:
            lines.append(f"  {name}={shown}: {message}")
    return "\n".join(lines)
