"""`confine`: a relative path resolved inside its root, on a real folder tree with symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.paths import Confiner, PathOutsideRootError, confine

REFUSED = None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """`cameras/` (the root) beside `cameras-old/`, whose name starts with the root's, a secret
    above the root, and symlinks planted inside the root pointing in and out."""
    tmp_path = tmp_path.resolve()
    root = tmp_path / "cameras"
    (root / "Front Door" / "snap").mkdir(parents=True)
    (root / "Front Door" / "snap" / "a.jpg").write_bytes(b"jpeg")
    old = tmp_path / "cameras-old"
    old.mkdir()
    (old / "x.jpg").write_bytes(b"old")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    os.symlink(old / "x.jpg", root / "old.jpg")  # a file in the sibling folder
    os.symlink(old, root / "old-dir")  # the sibling folder itself
    os.symlink(tmp_path / "secret.jpg", root / "secret.jpg")  # a file above the root
    os.symlink(tmp_path, root / "up")  # the folder above the root
    os.symlink(tmp_path / "nowhere.jpg", root / "dangling.jpg")  # outside, not there
    os.symlink(root / "Front Door" / "snap" / "a.jpg", root / "inside.jpg")
    os.symlink(root / "Front Door", root / "door")
    return tmp_path


# (relative path, where it resolves under the test's folder; REFUSED when refused)
CASES: list[tuple[str, str | None]] = [
    ("Front Door/snap/a.jpg", "cameras/Front Door/snap/a.jpg"),
    ("Front Door/snap/missing.jpg", "cameras/Front Door/snap/missing.jpg"),  # not there yet
    ("Front Door\\snap\\a.jpg", "cameras/Front Door/snap/a.jpg"),  # Windows separators
    ("Front Door/./snap/a.jpg", "cameras/Front Door/snap/a.jpg"),
    ("", "cameras"),  # the root itself
    (".", "cameras"),
    ("inside.jpg", "cameras/Front Door/snap/a.jpg"),  # symlink to a file inside
    ("door/snap/a.jpg", "cameras/Front Door/snap/a.jpg"),  # symlinked folder inside
    ("up/cameras/Front Door/snap/a.jpg", "cameras/Front Door/snap/a.jpg"),  # out and back in
    ("old.jpg", REFUSED),  # symlink into the sibling folder named like the root
    ("old-dir/x.jpg", REFUSED),
    ("old-dir", REFUSED),
    ("secret.jpg", REFUSED),  # symlink to a file above the root
    ("up/secret.jpg", REFUSED),
    ("up", REFUSED),
    ("dangling.jpg", REFUSED),  # dangling symlink pointing outside
    ("..", REFUSED),
    ("../secret.jpg", REFUSED),
    ("../cameras-old/x.jpg", REFUSED),
    ("Front Door/../../secret.jpg", REFUSED),
    ("Front Door/../Front Door/snap/a.jpg", REFUSED),  # `..` is refused even when it stays in
    ("Front Door\\..\\..\\secret.jpg", REFUSED),
    ("/etc/passwd", REFUSED),
    ("/Front Door/snap/a.jpg", REFUSED),
    ("\\Front Door\\snap\\a.jpg", REFUSED),
    ("//server/share/a.jpg", REFUSED),
    ("Front Door/snap/a.jpg\x00.png", REFUSED),
]


@pytest.mark.parametrize("root_resolved", [False, True])
@pytest.mark.parametrize(("relative", "expected"), CASES)
def test_confine_keeps_paths_inside_the_root(
    tree: Path, relative: str, expected: str | None, root_resolved: bool
) -> None:
    """A path resolving inside the root comes back resolved; anything leaving it is refused."""
    root = tree / "cameras"
    if expected is REFUSED:
        with pytest.raises(PathOutsideRootError):
            confine(root, relative, root_resolved=root_resolved)
    else:
        assert confine(root, relative, root_resolved=root_resolved) == tree / expected


@pytest.mark.parametrize(("relative", "expected"), [c for c in CASES if c[1] is not REFUSED])
def test_a_root_reached_through_a_symlink_confines_alike(
    tree: Path, relative: str, expected: str
) -> None:
    """A root given as a symlink is resolved first: paths inside come back under its target."""
    os.symlink(tree / "cameras", tree / "cameras-link")
    assert confine(tree / "cameras-link", relative) == tree / expected


def test_a_sibling_folder_named_like_the_root_is_outside_it(tree: Path) -> None:
    """`cameras-old/` starts with the text of `cameras` but is not inside it, even as a root."""
    with pytest.raises(PathOutsideRootError, match="outside"):
        confine(tree / "cameras", "old.jpg")
    assert confine(tree / "cameras-old", "x.jpg") == tree / "cameras-old" / "x.jpg"


@pytest.mark.parametrize(("relative", "expected"), CASES)
def test_a_confiner_decides_as_confine_does(
    tree: Path, relative: str, expected: str | None
) -> None:
    """The per-batch `Confiner` (each folder resolved once) gives what `confine` gives, asked
    twice (the second time from its folder cache)."""
    confiner = Confiner(tree / "cameras")
    for _ in range(2):
        if expected is REFUSED:
            with pytest.raises(PathOutsideRootError):
                confiner(relative)
        else:
            assert confiner(relative) == tree / expected


def test_a_confiner_follows_a_file_turned_into_a_symlink(tree: Path) -> None:
    """The folder is cached, the file's own name is looked at every time."""
    root = tree / "cameras"
    confiner = Confiner(root)
    assert confiner("Front Door/snap/a.jpg") == root / "Front Door" / "snap" / "a.jpg"
    (root / "Front Door" / "snap" / "b.jpg").symlink_to(tree / "secret.jpg")
    with pytest.raises(PathOutsideRootError):
        confiner("Front Door/snap/b.jpg")
