"""The alert channels HSI delivers to, in their fixed order.

The one list of them: the rules file (`rules`), the configuration (`config`), the `alert.sent` and
`alert.failed` entries (`streams.schemas`) and the API's alert filter all check against it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

AlertChannel = Literal["webhook", "email", "mqtt"]
CHANNELS: Final[tuple[AlertChannel, ...]] = get_args(AlertChannel)
