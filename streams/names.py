"""Every Redis key HSI uses, built in this one module.

Per-camera keys carry the camera id as a Redis Cluster hash tag (`hsi:{front_door}:files`), so all
of a camera's streams, dead letters, dedupe keys and batch state live in one slot: each MULTI and
multi-key read of a camera stays inside that slot and HSI runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

_CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")

# The hash tag of the keys shared by all cameras. Camera ids never start with "_", so it cannot
# collide with a camera's keys; giving the shared keys one tag lets the cameras stream and its
# dead letters share a slot (one MULTI) like any camera's keys.
SHARED = "_shared"


class Group(StrEnum):
    """Consumer groups, one per stage."""

    DETECT = "detect"
    BATCH = "batch"
    ANALYZE = "analyze"
    PROJECT = "project"
    NOTIFY = "notify"


class StreamKind(StrEnum):
    """The per-camera streams."""

    FILES = "files"
    DETECTIONS = "detections"
    BATCHES = "batches"
    ANALYSES = "analyses"
    DEAD = "dead"
    ALERTS = "alerts"
    CAMERAS = "cameras"  # only under the SHARED tag: `camera.registered` entries
    REANALYSES = "reanalyses"  # re-analysis runs: `reanalysis.*` entries


# Which stream each write-side stage consumes.
STAGE_INPUT: dict[Group, StreamKind] = {
    Group.DETECT: StreamKind.FILES,
    Group.BATCH: StreamKind.DETECTIONS,
    Group.ANALYZE: StreamKind.BATCHES,
    Group.NOTIFY: StreamKind.ANALYSES,
}

# What the projector consumes, per camera (the cameras stream is shared and read separately).
PROJECTED: tuple[StreamKind, ...] = (
    StreamKind.FILES,
    StreamKind.DETECTIONS,
    StreamKind.BATCHES,
    StreamKind.ANALYSES,
    StreamKind.DEAD,
    StreamKind.ALERTS,
    StreamKind.REANALYSES,
)

# The projected streams retention trims by age: the record of re-analysis runs is kept.
TRIMMED: tuple[StreamKind, ...] = tuple(k for k in PROJECTED if k is not StreamKind.REANALYSES)


class CameraIdError(ValueError):
    """A folder name that yields no usable camera id."""


def camera_id(folder_name: str) -> str:
    """Normalize a camera folder name: "Front Door" → "front_door", "Garage-2" → "garage_2".

    Accents are folded to ASCII, every run of other characters becomes one underscore, the
    result is lower case and at most 64 characters.
    """
    ascii_name = unicodedata.normalize("NFKD", folder_name).encode("ascii", "ignore").decode()
    normalized = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")[:64].rstrip("_")
    if not normalized:
        raise CameraIdError(
            f"folder name {folder_name!r} has no letters or digits to make a camera id from; "
            "rename the folder"
        )
    return normalized


def camera_folder(path: str) -> str | None:
    """The camera's folder name in a file path relative to the camera root (its first part:
    "Front Door" of "Front Door/snap/x.jpg"), which is what people call the camera; None for a
    path without one."""
    parts = [part for part in path.split("/") if part]
    return parts[0] if len(parts) > 1 else None


def camera_name_of(paths: Iterable[str]) -> str | None:
    """What people call the camera whose files these are: the first `camera_folder` of them."""
    return next((folder for path in paths if (folder := camera_folder(path))), None)


def is_camera_id(value: str) -> bool:
    return bool(_CAMERA_ID.fullmatch(value))


@dataclass(frozen=True)
class StreamNames:
    """Key builder for one HSI installation (`prefix` separates installations and tests)."""

    prefix: str = "hsi"

    # --- shared keys ---------------------------------------------------------------------------
    @property
    def cameras(self) -> str:
        """The stream of `camera.registered` entries (shared by all cameras)."""
        return f"{self.prefix}:{{{SHARED}}}:{StreamKind.CAMERAS.value}"

    @property
    def camera_set(self) -> str:
        """A set of every known camera id, for workers discovering new cameras."""
        return f"{self.prefix}:camera-ids"

    @property
    def camera_folders(self) -> str:
        """A hash of camera id → the folder that claimed it first (two folders that map to one
        id, "Front Door" and "front_door", would mix two cameras' files)."""
        return f"{self.prefix}:camera-folders"

    @property
    def epoch(self) -> str:
        """A token written once per Redis data set; a new token means the data was lost."""
        return f"{self.prefix}:epoch"

    @property
    def markers_restored(self) -> str:
        """The epoch token whose data set got its dedupe markers back from PostgreSQL."""
        return f"{self.prefix}:markers-restored"

    # --- per-camera keys -----------------------------------------------------------------------
    def _camera(self, camera: str) -> str:
        if camera != SHARED and not is_camera_id(camera):
            raise CameraIdError(f"{camera!r} is not a normalized camera id")
        return f"{self.prefix}:{{{camera}}}"

    def stream(self, camera: str, kind: StreamKind) -> str:
        return f"{self._camera(camera)}:{kind.value}"

    def files(self, camera: str) -> str:
        return self.stream(camera, StreamKind.FILES)

    def detections(self, camera: str) -> str:
        return self.stream(camera, StreamKind.DETECTIONS)

    def batches(self, camera: str) -> str:
        return self.stream(camera, StreamKind.BATCHES)

    def analyses(self, camera: str) -> str:
        return self.stream(camera, StreamKind.ANALYSES)

    def dead(self, camera: str) -> str:
        return self.stream(camera, StreamKind.DEAD)

    def alerts(self, camera: str) -> str:
        return self.stream(camera, StreamKind.ALERTS)

    def reanalyses(self, camera: str) -> str:
        return self.stream(camera, StreamKind.REANALYSES)

    def seen(self, camera: str, sha256: str) -> str:
        """Dedupe marker for one content hash (SET NX with a TTL)."""
        return f"{self._camera(camera)}:seen:{sha256}"

    def open_batch(self, camera: str) -> str:
        """The batch stage's open-batch state for a camera."""
        return f"{self._camera(camera)}:open-batch"

    def closed_batches(self, camera: str) -> str:
        """Ids of batches already closed (the exactly-once guard)."""
        return f"{self._camera(camera)}:closed-batches"

    def alert_plan(self, camera: str, event_id: str) -> str:
        """The notify stage's decision for one event: which channel alerts under which rule."""
        return f"{self._camera(camera)}:alert-plan:{event_id}"

    def alert_delivery(self, camera: str, event_id: str, channel: str) -> str:
        """The delivery state of one event on one channel (the exactly-once guard)."""
        return f"{self._camera(camera)}:alert-sent:{event_id}:{channel}"

    def alert_cooldown(self, camera: str, rule: str) -> str:
        """The last alert of a rule on a camera (its cooldown starts there)."""
        return f"{self._camera(camera)}:alert-cooldown:{rule}"

    def parse(self, key: str) -> tuple[str, StreamKind]:
        """`hsi:{front_door}:files` → ("front_door", StreamKind.FILES); the shared cameras
        stream parses as (SHARED, StreamKind.CAMERAS), and its dead letters go to `dead(SHARED)`."""
        match = re.fullmatch(re.escape(self.prefix) + r":\{([a-z0-9_]+)\}:([a-z]+)", key)
        if match is None:
            raise ValueError(f"{key!r} is not a camera stream of prefix {self.prefix!r}")
        return match.group(1), StreamKind(match.group(2))
