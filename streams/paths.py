"""Path confinement: a relative path from an entry or a request, resolved inside a root."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath


class PathOutsideRootError(ValueError):
    """The path would leave the folder it must stay in."""


def confine(root: Path, relative: str, *, root_resolved: bool = False) -> Path:
    """`root / relative`, resolved (symlinks followed); refuse anything that ends up outside.

    Absolute paths, `..` segments and NUL bytes are refused before touching the file system;
    symlinks are refused when their target lies outside `root`. A caller confining many paths in
    one root may resolve the root once (`root.resolve()`) and say so with `root_resolved`.
    """
    pure = _plain(relative)
    base = root if root_resolved else root.resolve()
    target = (base / pure).resolve()
    # `base in target.parents`, compared as text: a resolved path has no `.`, `..` or `//`.
    inside = str(base)
    if not inside.endswith(os.sep):
        inside += os.sep
    if target != base and not str(target).startswith(inside):
        raise PathOutsideRootError(f"{relative!r} resolves outside its folder")
    return target


def _plain(relative: str) -> PurePosixPath:
    """The path, when it is a plain relative one (checked without the file system)."""
    if "\x00" in relative:
        raise PathOutsideRootError("path contains a NUL byte")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith(("/", "\\")) or ".." in pure.parts:
        raise PathOutsideRootError(f"{relative!r} is not a plain relative path")
    return pure


class Confiner:
    """`confine` for many paths in one root, resolving each folder once.

    A path whose last part is not a symlink resolves to its folder's resolved path joined with
    that name, so only the folder needs the walk `Path.resolve` makes (an `lstat` per part from
    `/`); the folders of a camera's files are few, each is resolved and checked once per
    `Confiner`. A last part that is a symlink goes through `confine` whole. Make one per batch:
    a folder replaced by a symlink is seen by the next batch.
    """

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._folders: dict[str, Path] = {}

    @property
    def root(self) -> Path:
        return self._root

    def __call__(self, relative: str) -> Path:
        pure = _plain(relative)
        if not pure.parts or pure.name in {"", "."}:
            return confine(self._root, relative, root_resolved=True)
        folder, name = pure.parent, pure.name
        key = str(folder)
        parent = self._folders.get(key)
        if parent is None:
            parent = confine(self._root, key, root_resolved=True)
            self._folders[key] = parent
        target = parent / name
        try:
            linked = stat.S_ISLNK(os.lstat(target).st_mode)
        except OSError:
            linked = False  # missing: resolves to itself, as `Path.resolve` does
        return confine(self._root, relative, root_resolved=True) if linked else target
