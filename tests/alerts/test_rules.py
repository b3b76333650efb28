"""Reading the alert rules file: the format, the default rule and the error messages."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from streams.alerts import AlertConfigError, AlertRulesError, load_rules
from streams.alerts.rules import AlertRule, RuleSet, TimeWindow, check_channels, parse_rules

EXAMPLE = """
timezone = "Europe/Berlin"

[[rules]]
name = "front-door-nights"
min_level = "high"
min_score = 70
cameras = ["front_door"]
object_types = ["Person", "car"]
channels = ["webhook", "mqtt"]
cooldown_seconds = 300
[rules.schedule]
windows = ["22:00-06:00", "12:00-24:00"]
days = ["fri", "Sat"]

[[rules]]
name = "everything-critical"
min_level = "critical"
"""


def test_rules_file_is_read(tmp_path: Path) -> None:
    """Every field of the documented format is read."""
    path = tmp_path / "rules.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    rules = load_rules(path)
    assert rules.source == str(path)
    assert rules.timezone == "Europe/Berlin"
    first, second = rules.rules
    assert first.name == "front-door-nights"
    assert first.min_level == "high"
    assert first.min_score == 70
    assert first.cameras == {"front_door"}
    assert first.object_types == {"person", "car"}
    assert first.channels == ("webhook", "mqtt")
    assert first.cooldown_seconds == 300
    assert first.schedule is not None
    assert first.schedule.windows == (
        TimeWindow(time(22), time(6)),
        TimeWindow(time(12), None),
    )
    assert first.schedule.days == {4, 5}
    assert second == AlertRule("everything-critical", min_level="critical")


def test_without_a_file_the_default_rule_applies() -> None:
    """No ALERT_RULES_PATH: high and critical, every camera, every configured channel."""
    rules = load_rules(None)
    assert rules.rules == (AlertRule("default", min_level="high"),)
    assert rules.rules[0].channels_of(("webhook", "email", "mqtt")) == (
        "webhook",
        "email",
        "mqtt",
    )


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"rule": []}, "unknown top-level field 'rule'"),
        ({"rules": {"name": "x"}}, "write each rule as [[rules]]"),
        ({"timezone": "Mars/Base"}, "'Mars/Base' is not an IANA time zone"),
        ({"rules": [{"min_level": "high"}]}, "rules[0]: field 'name'"),
        ({"rules": [{"name": "Bad Name"}]}, "a-z, 0-9, _ and -"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "rule name 'a' is used twice"),
        (
            {"rules": [{"name": "a", "min_level": "hgh"}]},
            "rules[0] (rule 'a'): field 'min_level': 'hgh' is not accepted; use one of low, "
            "medium, high, critical",
        ),
        ({"rules": [{"name": "a", "min_score": 101}]}, "field 'min_score': 101"),
        ({"rules": [{"name": "a", "min_score": True}]}, "an integer from 0 to 100"),
        (
            {"rules": [{"name": "a", "cameras": ["Front Door"]}]},
            "'front_door' for this folder name",
        ),
        ({"rules": [{"name": "a", "cameras": "front_door"}]}, "a list of strings"),
        ({"rules": [{"name": "a", "channels": ["sms"]}]}, "use webhook, email, mqtt"),
        ({"rules": [{"name": "a", "channels": []}]}, "name at least one channel"),
        ({"rules": [{"name": "a", "cooldown_seconds": -1}]}, "field 'cooldown_seconds'"),
        ({"rules": [{"name": "a", "cooldown": 5}]}, "unknown field 'cooldown'; accepted: name"),
        ({"rules": [{"name": "a", "schedule": "nights"}]}, "write it as a table"),
        ({"rules": [{"name": "a", "schedule": {}}]}, "give at least one window"),
        ({"rules": [{"name": "a", "schedule": {"windows": ["22-06"]}}]}, '"HH:MM-HH:MM"'),
        ({"rules": [{"name": "a", "schedule": {"windows": ["25:00-06:00"]}}]}, "00:00 to 24:00"),
        ({"rules": [{"name": "a", "schedule": {"windows": ["06:00-06:00"]}}]}, "empty window"),
        (
            {"rules": [{"name": "a", "schedule": {"windows": ["22:00-06:00"], "days": ["fr"]}}]},
            "schedule: field 'days': 'fr' is not accepted; use mon, tue",
        ),
        ({"rules": [{"name": "a", "schedule": {"hours": []}}]}, "unknown field 'hours'"),
        ({"rules": [{"name": "a", "skip_late": "yes"}]}, "field 'skip_late': 'yes'"),
        ({"rules": [{"name": "a", "zones": ["Front Porch"]}]}, "field 'zones': 'Front Porch'"),
        ({"rules": [{"name": "a", "required_zones": "porch"}]}, "a list of strings"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(
    document: dict[str, object], expected: str
) -> None:
    """Each error names the file, the rule, the field, the value and what is accepted."""
    with pytest.raises(AlertRulesError) as caught:
        parse_rules(document, "rules.toml")
    assert str(caught.value).startswith("rules.toml: ")
    assert expected in str(caught.value)


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    """Broken TOML and a missing file both name the file."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rules]\nname = 1", encoding="utf-8")
    with pytest.raises(AlertRulesError, match=r"broken\.toml: not a valid TOML file"):
        load_rules(broken)
    with pytest.raises(AlertRulesError, match=r"missing\.toml: cannot read the alert rules file"):
        load_rules(tmp_path / "missing.toml")


def test_a_rule_with_a_channel_that_is_not_configured_is_refused() -> None:
    """Naming a channel without settings is an error saying which settings to give."""
    rules = RuleSet((AlertRule("a", channels=("email",)),), "rules.toml")
    with pytest.raises(AlertConfigError, match=r"rule 'a' uses channel 'email'.*SMTP_HOST"):
        check_channels(rules, ("webhook",))
    check_channels(rules, ("webhook", "email"))


def test_alerts_without_any_channel_are_refused() -> None:
    """NOTIFICATION_ENABLED with no channel configured cannot alert anyone."""
    with pytest.raises(AlertConfigError, match="no channel is configured"):
        check_channels(load_rules(None), ())


def test_a_rule_may_skip_late_events() -> None:
    rules = parse_rules({"rules": [{"name": "now-only", "skip_late": True}, {"name": "all"}]})
    assert [r.skip_late for r in rules.rules] == [True, False]


def test_a_rule_may_name_zones() -> None:
    (rule,) = parse_rules(
        {"rules": [{"name": "porch", "zones": ["porch"], "required_zones": ["drive", "porch"]}]}
    ).rules
    assert (rule.zones, rule.required_zones) == (
        frozenset({"porch"}),
        frozenset({"drive", "porch"}),
    )
