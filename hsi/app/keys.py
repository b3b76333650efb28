"""The API's keys at start: the configured ones, none on loopback, or one HSI generates.

`with_api_keys()` decides API_KEY_ENABLED when it is unset, for the address the API really
listens on (`hsi up --host` included): keys are required beyond loopback. When keys are required
and API_KEYS is empty, HSI uses the key in `DATA_DIR/api-key`, generating it at the first start
(mode 0600); the start prints it once, and `hsi api-key` prints it again.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from hsi.api.keys import keys_required, new_key
from hsi.infra.secret_files import read_or_create
from hsi.settings.model import Settings
from streams.logs import log_event

log = logging.getLogger(__name__)

KEY_FILE = "api-key"


def api_key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


@dataclass(frozen=True)
class KeyChoice:
    settings: Settings  # API_KEY_ENABLED decided, API_KEYS filled when required
    generated: Path | None = None  # the key file in use, when the key is HSI's own
    created: bool = False  # the key file was made by this start


def with_api_keys(settings: Settings, host: str) -> KeyChoice:
    required = keys_required(settings.api_key_enabled, host)
    if not required or settings.api_keys:
        return KeyChoice(settings.model_copy(update={"api_key_enabled": required}))
    path = api_key_path(settings)
    key, created = read_or_create(path, new_key)
    decided = settings.model_copy(update={"api_key_enabled": True, "api_keys": [SecretStr(key)]})
    return KeyChoice(decided, generated=path, created=created)


def announce(choice: KeyChoice, host: str) -> None:
    """Say how the API is protected: the generated key once on the terminal, never in a log."""
    settings = choice.settings
    if choice.created and choice.generated is not None:
        key = settings.api_keys[0].get_secret_value()
        print(
            f"\nHSI generated an API key, because the API listens on {host}:\n\n    {key}\n\n"
            "Send it as the X-API-Key header, or enter it once on the dashboard. It is kept in "
            f"{choice.generated} (only you can read it); `hsi api-key` prints it again.\n",
            file=sys.stderr,
            flush=True,
        )
    if choice.generated is not None:
        log_event(log, "api.key", source="generated", path=str(choice.generated))
    elif settings.api_key_enabled:
        log_event(log, "api.key", source="API_KEYS", keys=len(settings.api_keys))
    elif keys_required(None, host):
        log_event(
            log,
            "api.open",
            level=logging.WARNING,
            host=host,
            detail="API_KEY_ENABLED=false on an address other machines reach: anyone who "
            "reaches it sees every camera's pictures; keep it behind an authenticating proxy",
        )
