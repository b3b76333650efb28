"""Path confinement: a relative path from an entry or a request, resolved inside a root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


class PathOutsideRootError(ValueError):
    """The path would leave the folder it must stay in."""


def confine(root: Path, relative: str, *, root_resolved: bool = False) -> Path:
    """`root / relative`, resolved (symlinks followed); refuse anything that ends up outside.

    Absolute paths, `..` segments and NUL bytes are refused before touching the file system;
    symlinks are refused when their target lies outside `root`. A caller confining many paths in
    one root may resolve the root once (`root.resolve()`) and say so with `root_resolved`.
    """
    if "\x00" in relative:
        raise PathOutsideRootError("path contains a NUL byte")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or relative.startswith(("/", "\\")) or ".." in pure.parts:
        raise PathOutsideRootError(f"{relative!r} is not a plain relative path")
    base = root if root_resolved else root.resolve()
    target = (base / pure).resolve()
    # `base in target.parents`, compared as text: a resolved path has no `.`, `..` or `//`.
    inside = str(base)
    if not inside.endswith(os.sep):
        inside += os.sep
    if target != base and not str(target).startswith(inside):
        raise PathOutsideRootError(f"{relative!r} resolves outside its folder")
    return target
