"""Print the installed version of every direct dependency in pyproject.toml (`dependencies` and
the `test` extra), so that a test run's output shows what it ran on."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
for requirement in requirements:
    name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
    try:
        found = version(name)
    except PackageNotFoundError:
        found = "not installed"
    print(f"{name}=={found}  ({requirement})")
