"""Alerts: rules that pick events, and channels (webhook, e-mail, MQTT) that deliver them.

`rules` reads and validates the rules file, `decisions` holds the pure decisions (does a rule
fire, cooldowns, which channel alerts, may a delivery be sent), `ledger` the Redis state that
makes each delivery happen once, `message` what an alert says, `channels` the deliveries. The
stage that runs them is `streams.stages.notify`.
"""

from __future__ import annotations

from streams.alerts.config import EmailConfig, MqttConfig, NotifyConfig, WebhookConfig
from streams.alerts.errors import AlertConfigError, AlertError, AlertRulesError, ChannelError
from streams.alerts.rules import AlertRule, RuleSet, Schedule, TimeWindow, load_rules

__all__ = [
    "AlertConfigError",
    "AlertError",
    "AlertRule",
    "AlertRulesError",
    "ChannelError",
    "EmailConfig",
    "MqttConfig",
    "NotifyConfig",
    "RuleSet",
    "Schedule",
    "TimeWindow",
    "WebhookConfig",
    "load_rules",
]
