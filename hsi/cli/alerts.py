"""`hsi alerts check`: the alert rules and channels in force."""

from __future__ import annotations

import click

from hsi.cli.common import cli_settings, click_errors


@click.group()
def alerts() -> None:
    """Alert rules and channels."""


@alerts.command("check")
def alerts_check() -> None:
    """Check ALERT_RULES_PATH and the channel settings; print the rules in force."""
    from hsi.settings import components
    from streams.alerts import AlertError, load_rules
    from streams.alerts.rules import check_channels

    settings = cli_settings()
    with click_errors(AlertError):
        notify = components.notify_config(settings)
        rules = load_rules(notify.rules_path)
        check_channels(rules, notify.channel_names)
    state = "on" if settings.notification_enabled else "off (NOTIFICATION_ENABLED=false)"
    click.echo(f"notifications: {state}")
    click.echo(f"channels: {', '.join(notify.channel_names)}")
    click.echo(f"rules: {rules.source}, zone {rules.timezone or notify.timezone}")
    for rule in rules.rules:
        parts = [
            f"level >= {rule.min_level}" if rule.min_level else "",
            f"score >= {rule.min_score}" if rule.min_score is not None else "",
            f"cameras {', '.join(sorted(rule.cameras))}" if rule.cameras else "every camera",
            f"objects {', '.join(sorted(rule.object_types))}" if rule.object_types else "",
            f"in zone {' or '.join(sorted(rule.zones))}" if rule.zones else "",
            f"in zones {' and '.join(sorted(rule.required_zones))}" if rule.required_zones else "",
            "not late" if rule.skip_late else "",
            f"schedule {', '.join(map(str, rule.schedule.windows))}" if rule.schedule else "",
            f"cooldown {rule.cooldown_seconds:g} s" if rule.cooldown_seconds else "",
            "→ " + ", ".join(rule.channels_of(notify.channel_names)),
        ]
        click.echo(f"- {rule.name}: " + "; ".join(p for p in parts if p))
