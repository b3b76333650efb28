"""Path confinement: a relative path from an entry or a request, resolved inside a root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class PathOutsideRootError(ValueError):
    """The path would leave the folder it must stay in."""


def confine(root: Path, relative: str) -> Path:
    """`root / relative`, resolved (symlinks followed); refuse anything that ends up outside.

    Absolute paths, `..` segments and NUL bytes are refused before touching the file system;
    symlinks are refused when their target lies outside `root`.
    """
    if "\x00" in relative:
        raise PathOutsideRootError("path contains a NUL byte")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith(("/", "\\")) or ".." in pure.parts:
        raise PathOutsideRootError(f"{relative!r} is not a plain relative path")
    base = root.resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        raise PathOutsideRootError(f"{relative!r} resolves outside its folder")
    return target
