"""Masking secrets in text and structured fields: URL credentials, key=value secrets, bearer
tokens, API keys; long paths shortened; long text truncated. Used by logs and error bodies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# --- secrets ------------------------------------------------------------------------------------

MASK = "***"
_TRUNCATED = "…[truncated]"
_SENSITIVE_WORDS = r"password|passwd|pwd|secret|token|api[_-]?key|apikey"

# scheme://user:password@host — the password runs to the last "@" before a space or slash.
_URL_CREDENTIALS = re.compile(
    r"(?P<prefix>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*):(?P<secret>[^\s/]*)@", re.IGNORECASE
)
_AUTHORIZATION = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>basic|bearer|digest|token|negotiate)\s+)?"
    r"(?P<secret>[^\s,;'\"]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# password=…, "api_key": "…", X-API-Key: …, PGPASSWORD=…: a key that ends in a secret word.
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![\w-])[\w-]*?(?:{_SENSITIVE_WORDS})(?![\w-]))"
    r"(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&'\"]+)",
    re.IGNORECASE,
)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
_SECRET_KEY_NAME = re.compile(
    rf"(?:^|[_\-.])(?:{_SENSITIVE_WORDS}|authorization|credentials?)$", re.IGNORECASE
)
_PATH_CHARS = r"[^\s/\\'\"(),;:<>|]"
# An absolute path of three or more parts (`/a/b/c`, `C:\a\b\c`) that is not part of a URL.
_POSIX_PATH = re.compile(
    rf"(?<![\w.~:/\\-])/(?:{_PATH_CHARS}+/)+(?P<tail>{_PATH_CHARS}+/{_PATH_CHARS}+)"
)
_WINDOWS_PATH = re.compile(
    rf"\b[A-Za-z]:\\(?:{_PATH_CHARS}+\\)+(?P<tail>{_PATH_CHARS}+\\{_PATH_CHARS}+)"
)


def _mask_key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{MASK}{quote}"


def _mask_authorization(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    return f"{match.group('head')}{scheme + ' ' if scheme else ''}{MASK}"


# Every pattern above needs one of these words, whatever their case: a text holding none of them
# (an access-log line, most messages) is kept after a lower-casing and a few substring scans,
# where the five patterns cost a hundred times more. `re.IGNORECASE` also matches `İ` and `ı`
# as i, `ſ` as s and the Kelvin sign as k, so those are folded first.
_TRIGGERS = (
    "authorization",
    "bearer",
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "sk-",
)
_ASCII_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def may_hold_secret(text: str) -> bool:
    """False only when no pattern of `mask_secrets` can match `text`."""
    if "://" in text and "@" in text:
        return True
    folded = (text if text.isascii() else text.translate(_ASCII_FOLD)).lower()
    return any(word in folded for word in _TRIGGERS)


def mask_secrets(text: str) -> str:
    """`text` with passwords, tokens and API keys replaced by `***`; everything else kept."""
    if not text or not may_hold_secret(text):
        return text
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('prefix')}:{MASK}@", text)
    text = _AUTHORIZATION.sub(_mask_authorization, text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')} {MASK}", text)
    text = _KEY_VALUE.sub(_mask_key_value, text)
    return _OPENAI_KEY.sub(f"sk-{MASK}", text)


def shorten_paths(text: str) -> str:
    text = _POSIX_PATH.sub(lambda m: f"…/{m.group('tail')}", text)
    return _WINDOWS_PATH.sub(lambda m: f"…\\{m.group('tail')}", text)


def _describe(value: object) -> str:
    if isinstance(value, BaseException):
        detail = str(value)
        return f"{type(value).__name__}: {detail}" if detail else type(value).__name__
    return str(value)


def truncate(text: str, max_length: int, *, keep_tail: bool = False) -> str:
    if len(text) <= max_length:
        return text
    if max_length <= len(_TRUNCATED):
        return text[-max_length:] if keep_tail else text[:max_length]
    keep = max_length - len(_TRUNCATED)
    return _TRUNCATED + text[-keep:] if keep_tail else text[:keep] + _TRUNCATED


def sanitize_error(value: object, max_length: int = 500) -> str:
    """A message that is safe to show and store: secrets masked, long absolute paths cut to
    `…/last/two`, NUL bytes removed, at most `max_length` characters (`…[truncated]` marks a cut).

    Exceptions are described as `TypeName: message`.
    """
    text = shorten_paths(mask_secrets(_describe(value).replace("\x00", "")))
    return truncate(text, max(0, max_length))


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_NAME.search(key))


MAX_DEPTH = 6


def jsonable(value: object, depth: int = 0) -> object:
    """A JSON- and jsonb-safe copy: strings masked and NUL-free, NaN/inf as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return mask_secrets(value.replace("\x00", ""))
    if depth < MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                str(k).replace("\x00", ""): (
                    MASK if is_secret_key(str(k)) else jsonable(v, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [jsonable(v, depth + 1) for v in value]
    return mask_secrets(str(value).replace("\x00", ""))


def safe_fields(context: Mapping[str, object]) -> dict[str, object]:
    return {k: MASK if is_secret_key(k) else jsonable(v) for k, v in context.items()}
