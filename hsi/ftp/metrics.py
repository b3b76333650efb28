"""The FTP receiver's counters, on HSI's meter (`hsi.infra.telemetry`; no-ops before setup).

- `bans` `hsi_ftp_bans_total`: addresses banned for failed logins
- `connections_refused` `hsi_ftp_connections_refused_total`: reason (`banned`, `per_ip_limit`,
  `login_timeout`)
- `quota_refusals` `hsi_ftp_quota_refusals_total`: camera, limit (`files`, `bytes`)
- `commands_refused` `hsi_ftp_commands_refused_total`: command (from `hsi.ftp.policy`'s table)

Labels are bounded: never an address, a path or a user name typed by a client.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Meter

from hsi.infra.telemetry import get_meter

__all__ = ["FtpInstruments"]


@dataclass(frozen=True)
class FtpInstruments:
    bans: Counter
    connections_refused: Counter
    quota_refusals: Counter
    commands_refused: Counter

    @classmethod
    def create(cls, meter: Meter | None = None) -> FtpInstruments:
        """On `meter`, or on the current telemetry's meter (call it when the receiver starts)."""
        meter = meter if meter is not None else get_meter()
        return cls(
            bans=meter.create_counter(
                "hsi_ftp_bans_total", description="Addresses banned after failed FTP logins."
            ),
            connections_refused=meter.create_counter(
                "hsi_ftp_connections_refused_total",
                description="FTP connections refused or closed before login, by reason.",
            ),
            quota_refusals=meter.create_counter(
                "hsi_ftp_quota_refusals_total",
                description="FTP uploads refused by the daily quota, by camera and limit.",
            ),
            commands_refused=meter.create_counter(
                "hsi_ftp_commands_refused_total",
                description="FTP commands camera accounts may not use, by command.",
            ),
        )
