"""The accuracy benchmark's frames: synthetic 1080p camera uploads with known truths.

Made in memory at run time, deterministically (each frame from its own seeded generator), one
frame at a time (a decoded 1080p frame is 6 MB; the corpus is never held whole):

- **Subject frames**: a background (`BACKGROUNDS`) scaled to cover 1920×1080 (at 1.0–1.25×
  the covering scale), cropped at a random place and maybe mirrored; a subject (`SUBJECTS`,
  a photo cropped to the box drawn by hand around the person or cat, maybe mirrored) resized
  to a height of `HEIGHTS` pixels and pasted at a random place fully inside the frame. The
  truth is the pasted rectangle and its label.
- **Empty frames**: a background alone, for false detections.
- **Real photos**: the five test photos at their own size, the hand boxes as truths (none in
  the empty ones).

Each synthetic frame comes with a **reference**: the same background without the subject, its
brightness changed by up to ±2 % — a camera's previous snapshot, which the `motion` mode
compares against. Both go through a JPEG round trip at quality 85, as camera uploads do. The
real photos have no reference (a camera's first upload).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from PIL import Image, ImageEnhance

from benchmarks.options import Options
from streams.detectors.base import BoundingBox

FRAME_WIDTH = 1920
FRAME_HEIGHT = 1080
HEIGHTS: tuple[int, ...] = (80, 100, 150, 200, 300, 450)
JPEG_QUALITY = 85
MAX_BRIGHTNESS_CHANGE = 0.02
MAX_ZOOM = 1.25  # a background is scaled to 1.0–1.25× the scale that covers the frame
SEED = 2026

TEST_PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos"
TEXTURES = Path(__file__).resolve().parent / "photos"

FrameKind = Literal["subject", "empty", "real"]


@dataclass(frozen=True)
class Subject:
    """A photo of one person or cat, and the box around it drawn by hand (see the README)."""

    name: str
    path: Path
    label: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo's pixels


@dataclass(frozen=True)
class Background:
    """A picture with no person or cat in it."""

    name: str
    path: Path
    # COCO labels of real objects in the picture (the coffee's cup): a detection of one of them
    # is neither a truth found nor a false detection.
    present: frozenset[str] = frozenset()


SUBJECTS: tuple[Subject, ...] = (
    Subject("astronaut", TEST_PHOTOS / "person-astronaut.jpg", "person", (20, 10, 362, 512)),
    Subject("cameraman", TEST_PHOTOS / "person-cameraman.jpg", "person", (0, 63, 332, 512)),
    Subject("chelsea", TEST_PHOTOS / "cat-chelsea.jpg", "cat", (0, 0, 385, 300)),
)

BACKGROUNDS: tuple[Background, ...] = (
    Background("grass", TEXTURES / "texture-grass.jpg"),
    Background("gravel", TEXTURES / "texture-gravel.jpg"),
    Background("brick", TEXTURES / "texture-brick.jpg"),
    Background(
        "coffee",
        TEST_PHOTOS / "empty-coffee.jpg",
        frozenset({"cup", "bowl", "spoon", "dining table"}),
    ),
    Background("rocket", TEST_PHOTOS / "empty-rocket.jpg"),
)


@dataclass(frozen=True)
class Truth:
    """An object the detector should find: its label and box in frame pixels."""

    label: str
    box: BoundingBox
    height: int | None  # the pasted height in pixels (a bucket); None in the real photos


@dataclass(frozen=True)
class Annotation:
    """What is known about a frame: the truths, and the labels of its background's objects."""

    name: str
    kind: FrameKind
    truths: tuple[Truth, ...] = ()
    present: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Spec:
    """How to make one frame (`render` makes it)."""

    name: str
    kind: FrameKind
    seed: str
    background: Background | None = None
    subject: Subject | None = None
    height: int | None = None


@dataclass(frozen=True)
class Frame:
    """A frame as the detector receives it, its camera's previous frame, and its truths."""

    annotation: Annotation
    picture: Image.Image
    reference: Image.Image | None


@dataclass(frozen=True)
class Layout:
    """How many frames: per subject and height, `positions` random places; `empty` empty ones."""

    person_positions: int
    cat_positions: int
    empty: int
    heights: tuple[int, ...] = HEIGHTS
    real: bool = True

    def specs(self, seed: int = SEED) -> list[Spec]:
        """Every frame's recipe, in order; backgrounds taken in turn so that each is as often
        behind each subject and height."""
        specs: list[Spec] = []
        for subject_index, subject in enumerate(SUBJECTS):
            positions = self.cat_positions if subject.label == "cat" else self.person_positions
            for height_index, height in enumerate(self.heights):
                for position in range(positions):
                    turn = subject_index + height_index + position
                    name = f"{subject.name}@{height}px#{position}"
                    specs.append(
                        Spec(
                            name,
                            "subject",
                            f"{seed}:{name}",
                            BACKGROUNDS[turn % len(BACKGROUNDS)],
                            subject,
                            height,
                        )
                    )
        for index in range(self.empty):
            background = BACKGROUNDS[index % len(BACKGROUNDS)]
            name = f"empty-{background.name}#{index}"
            specs.append(Spec(name, "empty", f"{seed}:{name}", background))
        if self.real:
            specs.extend(Spec(f"photo-{s.name}", "real", "", subject=s) for s in SUBJECTS)
            specs.extend(Spec(f"photo-{b.name}", "real", "", b) for b in BACKGROUNDS[3:])
        return specs


FULL = Layout(person_positions=8, cat_positions=4, empty=50)
QUICK = Layout(person_positions=3, cat_positions=2, empty=16)
SMOKE = Layout(person_positions=1, cat_positions=1, empty=2, heights=(100, 300))


def layout_for(options: Options) -> Layout:
    return options.pick(full=FULL, quick=QUICK, smoke=SMOKE)


def frames(layout: Layout, seed: int = SEED) -> Iterator[Frame]:
    """The layout's frames, made one at a time."""
    for spec in layout.specs(seed):
        yield render(spec)


def render(spec: Spec) -> Frame:
    """The frame a recipe describes; the same recipe always gives the same pixels."""
    if spec.kind == "real":
        return _real(spec)
    assert spec.background is not None
    rng = random.Random(spec.seed)  # noqa: S311 - a reproducible corpus, not a secret
    background = _cover(_photo(spec.background.path), rng)
    factor = 1.0 + rng.uniform(-MAX_BRIGHTNESS_CHANGE, MAX_BRIGHTNESS_CHANGE)
    reference = _jpeg(ImageEnhance.Brightness(background).enhance(factor))
    truths: tuple[Truth, ...] = ()
    picture = background
    if spec.kind == "subject":
        assert spec.subject is not None
        assert spec.height is not None
        pasted = _subject(spec.subject, spec.height, rng)
        x = rng.randint(0, FRAME_WIDTH - pasted.width)
        y = rng.randint(0, FRAME_HEIGHT - pasted.height)
        picture = background.copy()
        picture.paste(pasted, (x, y))
        box = BoundingBox(float(x), float(y), float(pasted.width), float(pasted.height))
        truths = (Truth(spec.subject.label, box, spec.height),)
    annotation = Annotation(spec.name, spec.kind, truths, spec.background.present)
    return Frame(annotation, _jpeg(picture), reference)


def _real(spec: Spec) -> Frame:
    if spec.subject is not None:
        photo = _photo(spec.subject.path)
        left, top, right, bottom = spec.subject.box
        box = BoundingBox(float(left), float(top), float(right - left), float(bottom - top))
        annotation = Annotation(spec.name, "real", (Truth(spec.subject.label, box, None),))
    else:
        assert spec.background is not None
        photo = _photo(spec.background.path)
        annotation = Annotation(spec.name, "real", present=spec.background.present)
    return Frame(annotation, photo.copy(), None)


@cache
def _photo(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _cover(photo: Image.Image, rng: random.Random) -> Image.Image:
    """`photo` scaled to cover the frame (times 1.0–1.25), cropped at random, maybe mirrored."""
    scale = max(FRAME_WIDTH / photo.width, FRAME_HEIGHT / photo.height)
    scale *= rng.uniform(1.0, MAX_ZOOM)
    width, height = FRAME_WIDTH / scale, FRAME_HEIGHT / scale  # the crop, in photo pixels
    left = rng.uniform(0, photo.width - width)
    top = rng.uniform(0, photo.height - height)
    covered = photo.resize(
        (FRAME_WIDTH, FRAME_HEIGHT),
        Image.Resampling.BICUBIC,
        box=(left, top, left + width, top + height),
    )
    if rng.random() < 0.5:
        covered = covered.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return covered


def _subject(subject: Subject, height: int, rng: random.Random) -> Image.Image:
    """The subject's hand box resized to `height` pixels (aspect kept), maybe mirrored."""
    crop = _photo(subject.path).crop(subject.box)
    width = max(1, round(crop.width * height / crop.height))
    resized = crop.resize((width, height), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return resized


def _jpeg(picture: Image.Image) -> Image.Image:
    """`picture` after a JPEG round trip at a camera's quality."""
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
