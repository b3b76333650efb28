"""What every dashboard route shares: the configurations, the renderer and the key gate."""

from __future__ import annotations

from dataclasses import dataclass

from hsi.api.config import APIConfig
from hsi.web.auth import Gate
from hsi.web.config import WebConfig
from hsi.web.render import Renderer


@dataclass(frozen=True)
class Site:
    api: APIConfig
    web: WebConfig
    render: Renderer
    gate: Gate

    @classmethod
    def build(cls, api: APIConfig, web: WebConfig) -> Site:
        return cls(
            api=api,
            web=web,
            render=Renderer(web, keys_enabled=api.api_key_enabled),
            gate=Gate(enabled=api.api_key_enabled, keys=api.api_keys),
        )
