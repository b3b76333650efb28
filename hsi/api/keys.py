"""What makes an API key acceptable, and a new one.

Pure: the settings refuse a weak key at start with `key_problem()`, and `hsi.app.keys` makes a
key with `new_key()` when the API must have one and none is configured.
"""

from __future__ import annotations

import ipaddress
import secrets

MIN_KEY_LENGTH = 32

# Keys that appear in HSI's documentation and examples: known to everyone who reads them.
EXAMPLE_KEYS = frozenset(
    {
        "change-me",
        "changeme",
        "replace-me-with-a-long-random-key",
        "replace-with-the-output-of-hsi-api-key-new",
        "0123456789abcdef0123456789abcdef",
        "key1",
        "key2",
    }
)


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key, or None when it can."""
    if key.strip().lower() in EXAMPLE_KEYS:
        return "is an example from HSI's documentation, known to anyone who read it"
    if len(key) < MIN_KEY_LENGTH:
        return f"has {len(key)} characters; an API key needs at least {MIN_KEY_LENGTH}"
    if len(set(key)) < 8:
        return "repeats a few characters; use a random key"
    return None


def new_key() -> str:
    """A random key: 32 bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def keys_required(enabled: bool | None, host: str) -> bool:
    """API_KEY_ENABLED as set, or, unset, whether the API listens beyond loopback."""
    return (not is_loopback(host)) if enabled is None else enabled
