"""B6 detection throughput: `hsi up`'s detection with its default settings, against onnxruntime
using every core.

Files: `N` distinct 1280×720 JPEGs over 4 camera folders, made once per run from the photos in
`tests/data/photos/`: each camera has its view (a background photo scaled to cover the frame), and
each of its files is the view with one or two subject photos — people, a cat — pasted at seeded
positions and sizes, as a camera's snapshots of things moving in front of it. HSI and the floor
decode and detect the same pixels.

HSI: the files are published as `hsi ingest` publishes them (B1's `publish`: `Ledger.publish_once`,
64 in flight, each in its `watch` span) while one `Pipeline` runs every stage as `hsi up` runs
them, with the detector the pipeline builds itself from the default settings
(`components.detector_config` → `build_detector`; the detect stage's concurrency from
`DETECTOR_MAX_CONCURRENCY`): whatever the defaults are when the benchmark runs is what it measures.
Files/s from the first publish to the last `detection.*` entry written to Redis; every one must be
a completed detection. Before the clock starts, a few other files go through the pipeline, so the
ONNX session(s) exist and have run once.

The other stages (batch, analyze with rules, project into PostgreSQL) run too: they cost about
1 ms of CPU per file (B1) against tens of milliseconds per detection, so they do not dominate, and
leaving them out would hide what they take from the detect stage's cores and event loop in
`hsi up`. What the watcher does before publishing (the probe: read, hash, decode) is not part of
this figure; B2 measures it.

Floor: the same detection work through onnxruntime and nothing else — PIL decode, the passes the
detection mode makes (the regions of `streams.detectors.regions` against the camera's previous
picture, held in a local variable), `nanodet.letterbox`, `session.run`, `nanodet.decode_outputs`,
the merging and the same thresholds — on every core, in two ways: (a) one session per core with
one intra-op thread, each driven by a thread of its own that takes its share of the cameras and
goes through their files in order; (b) one session with as many intra-op threads as cores, driven
by one thread. Both are printed; the floor is the faster of the two (by median).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from redis.asyncio import Redis

from benchmarks.environment import Servers, fresh_round, new_prefix
from benchmarks.options import Options
from benchmarks.report import Figure, Target, median, rate
from benchmarks.throughput import publish, register_cameras, running_pipeline, settings_for
from benchmarks.timing import BenchmarkError
from hsi.settings import components
from hsi.settings.model import Settings
from streams.detectors import DetectorConfig, filter_objects, nanodet, regions
from streams.detectors.base import DetectedObject, lowest_threshold
from streams.detectors.embedded import INPUT_NAME, MODEL_PATH
from streams.envelope import read_fields
from streams.schemas import DetectionCompleted, FileObserved
from streams.watch.ledger import Ledger

NAME = "detection"
WIDTH, HEIGHT = 1280, 720
CAMERAS = 4
PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
BACKGROUNDS = ("empty-coffee.jpg", "empty-rocket.jpg")
SUBJECTS = ("person-astronaut.jpg", "person-cameraman.jpg", "cat-chelsea.jpg")
SEED = 6
WARM_PREFIX = "WARM"  # the files run before the clock starts
JPEG_QUALITY = 85
TILE_OVERLAP = 0.2  # the embedded detector's (its settings do not change it)


def sizes(options: Options) -> int:
    """Files of one round."""
    return options.pick(full=300, quick=120, smoke=10)


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cameras() -> list[str]:
    return [f"cam_{index:02d}" for index in range(CAMERAS)]


# --- the files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """A generated JPEG in a camera folder."""

    camera: str
    relative: str  # to the camera root, as the watcher publishes it
    path: Path
    sha256: str
    size: int

    def observed(self) -> FileObserved:
        """Its `file.observed` entry, observed now."""
        now = datetime.now(UTC)
        return FileObserved(
            camera_id=self.camera,
            path=self.relative,
            sha256=self.sha256,
            size=self.size,
            mime="image/jpeg",
            media_kind="image",
            captured_at=now,
            capture_source="mtime",
            observed_at=now,
        )


def make_pictures(
    root: Path, ids: Sequence[str], count: int, warm: int, *, seed: int = SEED
) -> tuple[list[Picture], list[Picture]]:
    """(`warm` pictures for the warm-up, `count` to measure): distinct 1280×720 scenes, round
    robin over the camera folders under `root`. Each camera has its view, a background photo
    scaled to cover the frame (a seeded crop); each picture is the view with one or two subject
    photos pasted at seeded sizes and positions, sometimes mirrored — a camera's snapshots of
    things moving in front of it."""
    rng = random.Random(seed)  # noqa: S311 - pictures, not secrets
    backgrounds = [_load(name) for name in BACKGROUNDS]
    subjects = [_load(name) for name in SUBJECTS]
    views = {
        camera: _background(rng, backgrounds[i % len(backgrounds)]) for i, camera in enumerate(ids)
    }
    pictures: list[Picture] = []
    for index in range(warm + count):
        camera = ids[index % len(ids)]
        frame = views[camera].copy()
        for _ in range(rng.randint(1, 2)):
            subject = rng.choice(subjects)
            height = rng.randint(HEIGHT * 3 // 10, HEIGHT * 8 // 10)
            width = min(WIDTH, round(subject.width * height / subject.height))
            pasted = subject.resize((width, height), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                pasted = ImageOps.mirror(pasted)
            frame.paste(pasted, (rng.randint(0, WIDTH - width), rng.randint(0, HEIGHT - height)))
        buffer = io.BytesIO()
        frame.save(buffer, "JPEG", quality=JPEG_QUALITY)
        data = buffer.getvalue()
        name = f"{WARM_PREFIX}_{index:05d}" if index < warm else f"IMG_{index - warm:05d}"
        relative = f"{camera}/{name}.jpg"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        pictures.append(
            Picture(camera, relative, path, hashlib.sha256(data).hexdigest(), len(data))
        )
    if len({p.sha256 for p in pictures}) != len(pictures):  # the dedupe marker would skip one
        raise BenchmarkError("two generated pictures are identical; change the seed")
    return pictures[:warm], pictures[warm:]


def _load(name: str) -> Image.Image:
    with Image.open(PHOTOS / name) as opened:
        return opened.convert("RGB")


def _background(rng: random.Random, photo: Image.Image) -> Image.Image:
    """`photo` scaled to cover the frame (and up to a quarter more), cropped at a seeded place."""
    scale = max(WIDTH / photo.width, HEIGHT / photo.height) * rng.uniform(1.0, 1.25)
    width = max(WIDTH, round(photo.width * scale))
    height = max(HEIGHT, round(photo.height * scale))
    scaled = photo.resize((width, height), Image.Resampling.BILINEAR)
    left = rng.randint(0, width - WIDTH)
    top = rng.randint(0, height - HEIGHT)
    return scaled.crop((left, top, left + WIDTH, top + HEIGHT))


# --- HSI ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One side's round: files/s, objects found over the files, median ms per inference
    (letterbox + run + output decoding, as the embedded detector reports `inference_ms`)."""

    files_per_second: float
    objects: int
    inference_ms: float


def detector_config(settings: Settings) -> DetectorConfig:
    """The detector config `hsi up` builds from `settings`."""
    config = components.detector_config(settings)
    if config.backend != "embedded":
        raise BenchmarkError(
            f"B6 measures the embedded detector, but DETECTOR_BACKEND is {config.backend!r} "
            "in the environment; unset it"
        )
    return config


async def detection_count(redis: Redis, streams: Sequence[str]) -> int:
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return sum(await pipe.execute())


async def wait_for_entries(
    redis: Redis, streams: Sequence[str], count: int, *, within_seconds: float = 600.0
) -> float:
    """Poll until `streams` hold `count` entries; the `time.perf_counter()` they were seen at."""
    deadline = time.perf_counter() + within_seconds
    seen = 0
    while time.perf_counter() < deadline:
        seen = await detection_count(redis, streams)
        if seen >= count:
            return time.perf_counter()
        await asyncio.sleep(0.01)
    raise BenchmarkError(
        f"HSI: after {within_seconds:.0f} s only {seen}/{count} detection entries were written"
    )


async def read_detections(redis: Redis, streams: Sequence[str]) -> list[DetectionCompleted]:
    """The completed detections of the measured files (not the warm-up's); a failed one is an
    error (it would have been cheaper than a detection)."""
    found: list[DetectionCompleted] = []
    for stream in streams:
        rows: Any = await redis.xrange(stream)
        for _, fields in rows:
            entry, _ = read_fields(fields)
            if not isinstance(entry, DetectionCompleted):
                raise BenchmarkError(f"HSI: {stream} holds a {entry.type} entry: {entry}")
            if not Path(entry.path).name.startswith(WARM_PREFIX):
                found.append(entry)
    return found


async def measure_hsi(
    servers: Servers, root: Path, pictures: Sequence[Picture], warm: Sequence[Picture]
) -> Measured:
    """Files/s of `hsi up`'s pipeline, default settings, for one round."""
    ids = sorted({p.camera for p in (*pictures, *warm)})
    async with fresh_round(servers) as (redis, prefix, schema):
        settings = settings_for(prefix, root)
        async with running_pipeline(servers, settings, schema, None) as pipeline:
            ledger = Ledger(redis, pipeline.names, settings.dedupe_ttl)
            await register_cameras(ledger, ids)
            await pipeline.discover()
            streams = [pipeline.names.detections(camera) for camera in ids]
            await publish(ledger, (p.observed() for p in warm))
            await wait_for_entries(redis, streams, len(warm))
            started = time.perf_counter()
            publishing = asyncio.create_task(publish(ledger, (p.observed() for p in pictures)))
            ended = await wait_for_entries(redis, streams, len(warm) + len(pictures))
            await publishing
            detections = await read_detections(redis, streams)
    if len(detections) != len(pictures):
        raise BenchmarkError(f"HSI: {len(detections)} detections of {len(pictures)} files")
    return Measured(
        len(pictures) / (ended - started),
        sum(len(d.objects) for d in detections),
        median([d.inference_ms for d in detections]),
    )


# --- the floor ----------------------------------------------------------------------------------


def open_session(threads: int) -> Any:
    """An onnxruntime session of the embedded model with `threads` intra-op threads, otherwise
    set up as the embedded detector sets up its own."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(MODEL_PATH), sess_options=options, providers=["CPUExecutionProvider"]
    )


class RawDetector:
    """The embedded detector's work with nothing else: decode, the regions its mode looks at
    (`streams.detectors.regions`, against the camera's previous picture), letterbox, run and
    output decoding per pass, merging, thresholds."""

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._confidence = config.confidence_threshold
        self._classes = dict(config.class_thresholds)
        self._threshold = lowest_threshold(self._confidence, self._classes)

    def detect(
        self, session: Any, path: Path, previous: regions.GreyArray | None
    ) -> tuple[int, float, regions.GreyArray]:
        """(objects found, ms from the decoded picture to the objects, the picture's motion
        grey) for the file at `path`; `previous`: the camera's previous picture's grey."""
        with Image.open(path) as opened:
            picture = opened.convert("RGB")
        started = time.perf_counter()
        grey = regions.motion_grey(picture)
        config = self._config
        looked = regions.regions_for(
            config.mode,
            picture.width,
            picture.height,
            grey,
            previous,
            size=nanodet.INPUT_SIZE,
            tile=config.tile_size,
            overlap=TILE_OVERLAP,
            budget=config.motion_regions,
        )
        candidates = self._pass(session, picture)
        for region in looked:
            crop = picture.crop((region.x, region.y, region.right, region.bottom))
            candidates.extend(regions.shifted(self._pass(session, crop), region))
        merged = regions.merge_passes(candidates) if looked else candidates
        objects = filter_objects(merged, self._confidence, self._classes)
        return len(objects), (time.perf_counter() - started) * 1000.0, grey

    def _pass(self, session: Any, picture: Image.Image) -> list[DetectedObject]:
        tensor, scale = nanodet.letterbox(picture)
        outputs = session.run(None, {INPUT_NAME: tensor})
        return nanodet.decode_outputs(
            outputs,
            scale=scale,
            width=picture.width,
            height=picture.height,
            threshold=self._threshold,
        )


def _run_sessions(
    raw: RawDetector, sessions: Sequence[Any], cameras: Sequence[Sequence[Path]], warm: Path
) -> Measured:
    """Each camera's files in order (each compared with the one before), the cameras shared out
    over `sessions`, each session driven by a thread of its own (every session has run `warm`
    once before the clock starts)."""
    for session in sessions:
        raw.detect(session, warm, None)
    shares = [list(cameras[i :: len(sessions)]) for i in range(len(sessions))]

    def drive(session: Any, share: list[Sequence[Path]]) -> tuple[int, list[float]]:
        objects = 0
        times: list[float] = []
        previous: dict[int, regions.GreyArray] = {}
        for position in range(max((len(files) for files in share), default=0)):
            for camera, files in enumerate(share):  # the cameras' files interleaved
                if position < len(files):
                    found, ms, previous[camera] = raw.detect(
                        session, files[position], previous.get(camera)
                    )
                    objects += found
                    times.append(ms)
        return objects, times

    started = time.perf_counter()
    with ThreadPoolExecutor(len(sessions), thread_name_prefix="floor") as pool:
        results = list(pool.map(drive, sessions, shares))
    elapsed = time.perf_counter() - started
    return Measured(
        sum(len(files) for files in cameras) / elapsed,
        sum(objects for objects, _ in results),
        statistics.median([ms for _, times in results for ms in times]),
    )


def floor_per_core(
    config: DetectorConfig, cameras: Sequence[Sequence[Path]], warm: Path
) -> Measured:
    """(a) one session per core, one intra-op thread each, each driven by its own thread."""
    sessions = [open_session(1) for _ in range(cores())]
    return _run_sessions(RawDetector(config), sessions, cameras, warm)


def floor_shared(config: DetectorConfig, cameras: Sequence[Sequence[Path]], warm: Path) -> Measured:
    """(b) one session with an intra-op thread per core, driven by one thread."""
    return _run_sessions(RawDetector(config), [open_session(cores())], cameras, warm)


# --- the run ------------------------------------------------------------------------------------


def _round(
    index: int,
    servers: Servers,
    root: Path,
    pictures: Sequence[Picture],
    warm: Sequence[Picture],
    config: DetectorConfig,
) -> tuple[Measured, Measured, Measured]:
    """(HSI, floor a, floor b) of one round: HSI first in even rounds, the floor first in odd
    ones (and its two variants swapped too)."""
    by_camera: dict[str, list[Path]] = {}
    for picture in pictures:
        by_camera.setdefault(picture.camera, []).append(picture.path)
    paths = list(by_camera.values())

    def floors() -> tuple[Measured, Measured]:
        if index % 2 == 0:
            per_core = floor_per_core(config, paths, warm[0].path)
            return per_core, floor_shared(config, paths, warm[0].path)
        shared = floor_shared(config, paths, warm[0].path)
        return floor_per_core(config, paths, warm[0].path), shared

    if index % 2 == 0:
        hsi = asyncio.run(measure_hsi(servers, root, pictures, warm))
        per_core, shared = floors()
    else:
        per_core, shared = floors()
        hsi = asyncio.run(measure_hsi(servers, root, pictures, warm))
    return hsi, per_core, shared


def run(servers: Servers, options: Options) -> list[Figure]:
    files = sizes(options)
    count = cores()
    ids = cameras()
    with tempfile.TemporaryDirectory(prefix="hsi-bench-detect-") as folder:
        root = Path(folder) / "cameras"
        config = detector_config(settings_for(new_prefix(), root))
        warm, pictures = make_pictures(root, ids, files, max(CAMERAS, 2 * count))
        rounds = [
            _round(index, servers, root, pictures, warm, config) for index in range(options.rounds)
        ]
    hsi = [r[0] for r in rounds]
    per_core = [r[1] for r in rounds]
    shared = [r[2] for r in rounds]
    per_core_figure = rate(
        "B6",
        f"floor (a): {count} sessions × 1 intra-op thread, a thread each",
        "files/s",
        floor=False,
        note=_measured_note(per_core),
    )
    shared_figure = rate(
        "B6",
        f"floor (b): 1 session × {count} intra-op threads",
        "files/s",
        floor=False,
        note=_measured_note(shared),
    )
    per_core_figure.hsi.extend(m.files_per_second for m in per_core)
    shared_figure.hsi.extend(m.files_per_second for m in shared)
    best, best_name = (
        (per_core, "a") if per_core_figure.hsi_median >= shared_figure.hsi_median else (shared, "b")
    )
    main = rate(
        "B6",
        f"detection throughput, {files} 1280×720 JPEGs over {CAMERAS} cameras",
        "files/s",
        target=Target(min_ratio=0.85),
        note=(
            f"first publish → last detection entry in Redis; hsi up's pipeline, default settings "
            f"(detector {config.backend}, DETECTION_MODE={config.mode}, "
            f"DETECTOR_THREADS={config.threads or 'every core'}, "
            f"DETECTOR_MAX_CONCURRENCY={config.max_concurrency}); {_measured_note(hsi)}; "
            f"floor: ({best_name}), the faster on this machine ({count} cores)"
        ),
    )
    assert main.floor is not None
    main.hsi.extend(m.files_per_second for m in hsi)
    main.floor.extend(m.files_per_second for m in best)
    return [main, per_core_figure, shared_figure]


def _measured_note(rounds: Iterable[Measured]) -> str:
    rounds = list(rounds)
    objects = sorted({m.objects for m in rounds})
    ms = median([m.inference_ms for m in rounds])
    return (
        f"objects found {'/'.join(str(o) for o in objects)}, "
        f"median {ms:.1f} ms per inference (letterbox + run + outputs)"
    )
