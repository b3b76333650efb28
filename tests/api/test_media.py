"""GET /api/media/{camera}/{path} and /api/detections/{id}/thumbnail on real files."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.routes import media as media_routes
from hsi.api.thumbnails import render_thumbnail_file
from tests.api.conftest import MakeConfig, serve
from tests.api.rows import BASE, add_camera, detection_row, insert, media_row
from tests.conftest import PHOTOS
from tests.fakes.media import write_video

REFUSED = {"error": "no such media file"}
GREY = (128, 128, 128)


@pytest.fixture
async def tree(engine: AsyncEngine, camera_root: Path, tmp_path: Path) -> Path:
    """Two cameras with files, a secret next to the root and a symlink out of it."""
    await add_camera(engine, "front_door", "Front Door")
    await add_camera(engine, "other_cam", "Other Cam")
    snap = camera_root / "Front Door" / "snap"
    snap.mkdir(parents=True)
    (camera_root / "Other Cam").mkdir()
    shutil.copy(PHOTOS / "cat-chelsea.jpg", snap / "cat 1.jpg")
    (snap / "clip.mp4").write_bytes(bytes(range(256)) * 4)
    (snap / "notes.txt").write_text("not media")
    shutil.copy(PHOTOS / "empty-coffee.jpg", camera_root / "Other Cam" / "x.jpg")
    shutil.copy(PHOTOS / "empty-rocket.jpg", tmp_path / "secret.jpg")
    os.symlink(tmp_path / "secret.jpg", snap / "out.jpg")
    os.symlink(camera_root / "Other Cam" / "x.jpg", snap / "other.jpg")
    return camera_root


async def test_a_jpeg_is_served_with_type_and_caching_headers(
    client: httpx.AsyncClient, tree: Path
) -> None:
    """The original file comes back as image/jpeg with ETag and cache headers; a matching
    If-None-Match is a 304."""
    response = await client.get("/api/media/front_door/Front%20Door/snap/cat%201.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == (tree / "Front Door" / "snap" / "cat 1.jpg").read_bytes()
    assert response.headers["cache-control"] == "private, max-age=86400"
    assert response.headers["last-modified"].endswith("GMT")
    etag = response.headers["etag"]
    assert etag.startswith('"')
    again = await client.get(
        "/api/media/front_door/Front%20Door/snap/cat%201.jpg", headers={"If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


async def test_a_video_answers_range_requests(client: httpx.AsyncClient, tree: Path) -> None:
    """Videos are video/mp4 and a Range request gets 206 with those bytes."""
    response = await client.get(
        "/api/media/front_door/Front%20Door/snap/clip.mp4", headers={"Range": "bytes=10-19"}
    )
    assert response.status_code == 206
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-range"] == "bytes 10-19/1024"
    assert response.content == bytes(range(10, 20))


async def test_a_real_video_is_served_in_ranges_a_player_asks_for(
    client: httpx.AsyncClient, tree: Path
) -> None:
    """A real MP4 is served as a `<video>` element fetches it: an open range from the start,
    then a range at its end (where the index may be); the pieces are the file's bytes."""
    clip = write_video(tree / "Front Door" / "real.mp4", [(PHOTOS / "cat-chelsea.jpg", 1.0)])
    data, url = clip.read_bytes(), "/api/media/front_door/Front%20Door/real.mp4"
    first = await client.get(url, headers={"Range": "bytes=0-"})
    assert first.status_code == 206
    assert first.headers["accept-ranges"] == "bytes"
    assert first.headers["content-range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    assert first.content == data
    tail = await client.get(url, headers={"Range": f"bytes={len(data) - 100}-"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes {len(data) - 100}-{len(data) - 1}/{len(data)}"
    assert tail.content == data[-100:]


@pytest.mark.parametrize(
    "url",
    [
        "/api/media/front_door/%2e%2e/secret.jpg",
        "/api/media/front_door/Front%20Door/%2e%2e/%2e%2e/secret.jpg",
        "/api/media/front_door/Front%20Door/%2e%2e%2f%2e%2e%2fsecret.jpg",
        "/api/media/front_door/Front%20Door/..%2F..%2Fsecret.jpg",
        "/api/media/front_door/Front%20Door/%252e%252e%252f%252e%252e%252fsecret.jpg",
        "/api/media/front_door/Front%20Door/../../secret.jpg",
        "/api/media/front_door/Front%20Door/..%5c..%5csecret.jpg",
        "/api/media/front_door/%2Fetc%2Fpasswd",
        "/api/media/front_door//etc/passwd",
        "/api/media/front_door/Front%20Door/snap/out.jpg",
        "/api/media/front_door/Front%20Door/snap/other.jpg",
        "/api/media/front_door/../Other%20Cam/x.jpg",
        "/api/media/front_door/Front%20Door/%2e%2e/Other%20Cam/x.jpg",
        "/api/media/front_door/Other%20Cam/x.jpg",
        "/api/media/other_cam/Front%20Door/snap/cat%201.jpg",
        "/api/media/front_door/Front%20Door/snap/cat%201.jpg%00.png",
        "/api/media/front_door/Front%20Door/snap/notes.txt",
        "/api/media/front_door/Front%20Door/snap/missing.jpg",
        "/api/media/nobody/Front%20Door/snap/cat%201.jpg",
        "/api/media/Front%20Door/Front%20Door/snap/cat%201.jpg",
    ],
)
async def test_every_escape_is_the_same_404(
    client: httpx.AsyncClient, tree: Path, url: str
) -> None:
    """Traversal (plain, encoded, double-encoded, backslashes), absolute paths, NUL, symlinks out,
    other cameras' folders, non-media and missing files all get the same 404 body."""
    response = await client.get(url)
    assert response.status_code == 404
    if "/../" not in url:  # httpx itself resolves literal dot segments before sending
        assert response.json() == REFUSED


def _grey_jpeg(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, GREY).save(path, "JPEG", quality=95)
    return path


def _close(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


async def _thumbnail_setup(
    engine: AsyncEngine, camera_root: Path, name: str, kind: str
) -> list[dict[str, Any]]:
    file = media_row(
        "front_door",
        f"{name}-0",
        f"Front Door/{name}",
        BASE,
        media_kind=kind,
        mime="video/mp4" if kind == "video" else "image/jpeg",
    )
    await insert(engine, "media_files", [file])
    rows = [
        detection_row(file, f"d-{name}", 0, "person", (100, 100, 200, 150), (800, 600)),
        detection_row(file, f"d-{name}", 1, "car", (500, 300, 100, 100), (800, 600)),
    ]
    await insert(engine, "detections", rows)
    return rows


def _assert_boxes(image: Image.Image) -> None:
    # 800×600 → 400×300: the person box is (50, 50)–(149, 124), the car box (250, 150)–(299, 199)
    assert image.size == (400, 300)
    assert _close(image.getpixel((51, 87)), (255, 0, 0))  # left edge of the highlighted box
    assert _close(image.getpixel((100, 51)), (255, 0, 0))  # its top edge
    assert _close(image.getpixel((100, 87)), GREY)  # well inside it
    assert _close(image.getpixel((251, 175)), (255, 214, 0))  # the other box's left edge
    assert _close(image.getpixel((275, 175)), GREY)  # inside the other box
    assert _close(image.getpixel((10, 10)), GREY)  # outside every box


async def test_thumbnail_draws_every_box_and_highlights_the_requested_one(
    engine: AsyncEngine, tree: Path, make_config: MakeConfig
) -> None:
    """The thumbnail is a scaled JPEG with the boxes where the detector put them; it is cached
    on disk and revalidates with its ETag."""
    _grey_jpeg(tree / "Front Door" / "grey.jpg", (800, 600))
    rows = await _thumbnail_setup(engine, tree, "grey.jpg", "image")
    config = make_config(thumbnail_max_width=400)
    async with serve(config) as client:
        response = await client.get(f"/api/detections/{rows[0]['id']}/thumbnail")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        _assert_boxes(Image.open(io.BytesIO(response.content)).convert("RGB"))
        cached = config.data_dir / "thumbnails" / f"{rows[0]['id']}.jpg"
        assert cached.read_bytes() == response.content
        assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp files left
        again = await client.get(
            f"/api/detections/{rows[0]['id']}/thumbnail",
            headers={"If-None-Match": response.headers["etag"]},
        )
        assert again.status_code == 304

        other = await client.get(f"/api/detections/{rows[1]['id']}/thumbnail")
        picture = Image.open(io.BytesIO(other.content)).convert("RGB")
        assert _close(picture.getpixel((251, 175)), (255, 0, 0))  # now the car is highlighted
        assert _close(picture.getpixel((51, 87)), (255, 214, 0))

        for missing in (str(uuid.uuid4()), "nope"):
            response = await client.get(f"/api/detections/{missing}/thumbnail")
            assert response.status_code == 404
            assert "error" in response.json()


async def test_thumbnail_renders_are_bounded_in_concurrency(
    engine: AsyncEngine, tree: Path, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight requests for uncached thumbnails at once: never more than THUMBNAIL_CONCURRENCY
    renders run together; every request is answered."""
    rows: list[dict[str, Any]] = []
    for n in range(4):
        _grey_jpeg(tree / "Front Door" / f"g{n}.jpg", (800, 600))
        rows += await _thumbnail_setup(engine, tree, f"g{n}.jpg", "image")
    running, peak, lock = 0, 0, threading.Lock()

    def slow_render(*args: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)
            render_thumbnail_file(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(media_routes, "render_thumbnail_file", slow_render)
    async with serve(make_config(thumbnail_concurrency=2)) as client:
        answers = await asyncio.gather(
            *(client.get(f"/api/detections/{row['id']}/thumbnail") for row in rows)
        )
    assert [a.status_code for a in answers] == [200] * 8
    assert 1 <= peak <= 2


async def test_video_thumbnail_draws_on_the_first_frame(
    engine: AsyncEngine, tree: Path, make_config: MakeConfig, tmp_path: Path
) -> None:
    """A video's objects recorded without a frame time are drawn on its first frame."""
    grey = _grey_jpeg(tmp_path / "grey-source.jpg", (800, 600))
    write_video(tree / "Front Door" / "clip.mp4", [(grey, 0.4)], size=(800, 600))
    rows = await _thumbnail_setup(engine, tree, "clip.mp4", "video")
    async with serve(make_config(thumbnail_max_width=400)) as client:
        response = await client.get(f"/api/detections/{rows[0]['id']}/thumbnail")
        assert response.status_code == 200, response.text
        _assert_boxes(Image.open(io.BytesIO(response.content)).convert("RGB"))


async def test_video_thumbnail_draws_on_the_frame_the_object_was_seen_in(
    engine: AsyncEngine, tree: Path, make_config: MakeConfig, tmp_path: Path
) -> None:
    """A video's thumbnail is the sampled frame its object was seen in (not the first, black
    one), with only the boxes of that frame."""
    black = tmp_path / "black.jpg"
    Image.new("RGB", (800, 600), (0, 0, 0)).save(black, "JPEG", quality=95)
    grey = _grey_jpeg(tmp_path / "grey-source.jpg", (800, 600))
    write_video(tree / "Front Door" / "clip.mp4", [(black, 1.0), (grey, 1.0)], size=(800, 600))
    file = media_row(
        "front_door", "clip-0", "Front Door/clip.mp4", BASE, media_kind="video", mime="video/mp4"
    )
    await insert(engine, "media_files", [file])
    size = (800, 600)
    person = detection_row(file, "d-clip", 0, "person", (100, 100, 200, 150), size, 0.9, 1.0)
    car = detection_row(file, "d-clip", 1, "car", (500, 300, 100, 100), size, 0.8, 0.0)
    await insert(engine, "detections", [person, car])
    async with serve(make_config(thumbnail_max_width=400)) as client:
        response = await client.get(f"/api/detections/{person['id']}/thumbnail")
        assert response.status_code == 200, response.text
        picture = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert _close(picture.getpixel((10, 10)), GREY)  # the later frame, not the black one
        assert _close(picture.getpixel((51, 87)), (255, 0, 0))  # the person's box
        assert _close(picture.getpixel((251, 175)), GREY)  # the car was in another frame
        response = await client.get(f"/api/detections/{car['id']}/thumbnail")
        picture = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert _close(picture.getpixel((10, 10)), (0, 0, 0))  # the first frame
        assert _close(picture.getpixel((251, 175)), (255, 0, 0))  # the car's box
        assert _close(picture.getpixel((51, 87)), (0, 0, 0))  # no person in that frame


async def test_thumbnail_of_a_missing_file_is_404(
    engine: AsyncEngine, tree: Path, client: httpx.AsyncClient
) -> None:
    """A detection whose file is gone (or outside its folder) has no thumbnail."""
    rows = await _thumbnail_setup(engine, tree, "gone.jpg", "image")
    response = await client.get(f"/api/detections/{rows[0]['id']}/thumbnail")
    assert response.status_code == 404
    assert "cannot be decoded" in response.json()["error"]
