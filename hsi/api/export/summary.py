"""The texts of an export for a person: each event's `summary.txt` and the zip's `README.txt`.

Pure functions of an event.json record (after its files were written) and the local zone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from hsi.api.export.manifest import MANIFEST

_NOTES = {
    "present": "exported byte for byte",
    "missing": "no longer on disk (deleted by retention with RETENTION_DELETE_MEDIA, or removed)",
    "forgotten": "its record was deleted by retention; its path and digest are no longer known",
    "refused": "not exported",
}


def times(value: str | None, zone: tzinfo) -> str:
    """`2026-01-10 13:00:00 CET (UTC+01:00) = 2026-01-10 12:00:00 UTC` for an ISO 8601 time."""
    if value is None:
        return "unknown"
    at = datetime.fromisoformat(value).astimezone(UTC)
    local = at.astimezone(zone)
    offset = local.strftime("%z") or "+0000"
    return (
        f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} (UTC{offset[:3]}:{offset[3:]}) "
        f"= {at:%Y-%m-%d %H:%M:%S} UTC"
    )


def _heading(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _detected(detections: list[dict[str, Any]]) -> list[str]:
    if not detections:
        return ["Nothing was detected in the event's files."]
    counts = Counter(d["label"] for d in detections)
    best: dict[str, float] = {}
    for d in detections:
        best[d["label"]] = max(best.get(d["label"], 0.0), d["confidence"])
    return [
        f"- {count} x {label} (highest confidence {best[label]:.2f})"
        for label, count in counts.most_common()
    ]


def _analysis(record: dict[str, Any], zone: tzinfo) -> list[str]:
    status = record.get("analysis_status")
    lines = [f"Status: {status}"]
    if record.get("risk_level") is not None:
        lines.append(f"Risk: {record['risk_level']} (score {record['risk_score']} of 100)")
    if record.get("summary"):
        lines.append(f"Summary: {record['summary']}")
    if record.get("reasoning"):
        lines.append(f"Reasoning: {record['reasoning']}")
    if record.get("analysis_error"):
        lines.append(f"Error: {record['analysis_error']}")
    if record.get("analyzer"):
        model = f", model {record['model']}" if record.get("model") else ""
        lines.append(f"By: {record['analyzer']}{model}")
    if record.get("analyzed_at"):
        lines.append(f"At: {times(record['analyzed_at'], zone)}")
    judgements = record.get("judgements") or []
    if len(judgements) > 1:
        lines.append("Judgements, oldest first (the last is the current one):")
        for j in judgements:
            level = f"{j['risk_level']} ({j['risk_score']})" if j["risk_level"] else j["status"]
            lines.append(f"- {times(j['analyzed_at'], zone)}: {level} [entry {j['entry_id']}]")
    return lines


def _alerts(deliveries: list[dict[str, Any]], zone: tzinfo) -> list[str]:
    if not deliveries:
        return ["No alert was sent for this event."]
    lines = []
    for d in deliveries:
        at = d["delivered_at"] or d["recorded_at"]
        why = f" ({d['reason']})" if d.get("reason") else ""
        lines.append(
            f"- {d['channel']}: {d['status']}{why} at {times(at, zone)}, rule {d['rule']}, "
            f"attempt {d['attempt']} [entry {d['entry_id']}]"
        )
    return lines


def _file_lines(f: dict[str, Any], zone: tzinfo) -> list[str]:
    name = f.get("path") or f"file entry {f['file_entry_id']}"
    lines = [f"{f['position'] + 1}. {name}", f"   captured: {times(f.get('captured_at'), zone)}"]
    state = f["state"]
    recorded = f.get("recorded_sha256")
    if state == "present":
        lines.append(f"   in this export: {f['archive_path']}")
        digest = f.get("archive_sha256")
        if recorded is None:
            lines.append(f"   SHA-256: {digest} (no digest was recorded on arrival)")
        elif digest == recorded:
            lines.append(f"   SHA-256: {digest}, the same as recorded when it arrived")
        else:
            lines.append(
                f"   WARNING: the file on disk has SHA-256 {digest}, but {recorded} was recorded "
                "when it arrived: it changed since"
            )
        if f.get("picture"):
            lines.append(f"   with its boxes drawn: {f['picture']}")
        elif f.get("picture_error"):
            lines.append(f"   boxes could not be drawn: {f['picture_error']}")
    elif state == "missing":
        lines.append(f"   file {name} is {_NOTES['missing']}")
        if recorded:
            lines.append(f"   SHA-256 recorded when it arrived: {recorded}")
    elif state == "forgotten":
        lines.append(f"   file entry {f['file_entry_id']}: {_NOTES['forgotten']}")
    else:
        lines.append(f"   {f.get('note') or _NOTES['refused']}")
    lines.append(
        f"   stream entries: file {f['file_entry_id']}, detection {f['detection_entry_id'] or '-'}"
    )
    return lines


def event_summary(record: dict[str, Any], zone: tzinfo) -> str:
    """`summary.txt` of one event."""
    camera = record["camera"]
    title = f"Event {record['id']}"
    lines = [title, "=" * len(title), ""]
    display = camera.get("name") or camera["id"]
    lines.append(f"Camera: {display} (id {camera['id']})")
    lines.append(f"Time zone: {record['timezone']}")
    lines.append(f"From: {times(record.get('window_start'), zone)}")
    lines.append(f"To:   {times(record.get('window_end'), zone)}")
    lines += _heading("What was detected")
    lines += _detected(record["detections"])
    if record.get("zones"):
        lines.append(f"Zones: {', '.join(record['zones'])}")
    lines += _heading("Analysis")
    lines += _analysis(record, zone)
    lines += _heading("Alerts")
    lines += _alerts(record["alert_deliveries"], zone)
    lines += _heading("Files")
    if not record["files"]:
        lines.append("No file is recorded for this event.")
    for f in record["files"]:
        lines += _file_lines(f, zone)
    entries = record["stream_entries"]
    lines += _heading("Stream entries")
    lines.append(f"batch {entries['batch'] or '-'}, analysis {entries['analysis'] or '-'}")
    lines.append(f"alerts: {', '.join(entries['alerts']) or '-'}")
    lines.append("Every entry id and stream key is in event.json (`stream_entries`).")
    lines.append("")
    return "\n".join(lines)


def readme(
    records: Iterable[dict[str, Any]],
    created_at: datetime,
    selection: dict[str, Any],
    zone: tzinfo,
) -> str:
    """`README.txt` of the zip: what it holds and how to check it."""
    chosen = ", ".join(f"{k}={v}" for k, v in selection.items()) or "none"
    lines = [
        "HSI evidence export",
        "===================",
        "",
        f"Made: {times(created_at.isoformat(), zone)}",
        f"Selection: {chosen}",
        "",
        "Layout:",
        "  files/<camera id>/<path>         the camera's original files, byte for byte",
        "  events/<event id>/event.json     the event as HSI recorded it, with the SHA-256 of",
        "                                   each file recorded when it arrived and the stream",
        "                                   entry ids every fact came from",
        "  events/<event id>/summary.txt    the same, for a person",
        "  events/<event id>/pictures/      the files with the detected objects boxed",
        f"  {MANIFEST:<31}  the SHA-256 of every other file of this archive",
        "",
        "To check it: unpack, then run `sha256sum -c SHA256SUMS` in the unpacked folder; or run",
        "`hsi export verify <zip>`, which also compares each original with the digest recorded",
        "when it arrived.",
        "",
        "Events:",
    ]
    count = 0
    for record in records:
        count += 1
        camera = record["camera"].get("name") or record["camera"]["id"]
        level = record.get("risk_level") or record.get("analysis_status")
        lines.append(
            f"- {record['id']}  {times(record.get('window_start'), zone)}  {camera}  {level}"
        )
    if count == 0:
        lines.append("(none selected)")
    lines.append("")
    return "\n".join(lines)
