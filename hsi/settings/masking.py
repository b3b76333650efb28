"""Settings shown without their secrets: masked values and URL passwords, and validation errors
that name the variable, the (masked) value and what is accepted."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

SECRET_FIELDS = frozenset(
    {"llm_api_key", "api_keys", "smtp_password", "webhook_secret", "ftp_accounts"}
)
_URL_FIELDS = ("database_url", "redis_url", "mqtt_url")


def mask_url_password(url: str) -> str:
    """`scheme://user:secret@host` → `scheme://user:***@host`."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


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
