"""The configuration reference, generated from `Settings`: `docs/configuration.md`, `.env.example`.

Everything comes from the model: `Settings.model_fields` gives names, types, defaults, constraints
(`ge`, `le`, `gt`, `lt`, `pattern`, lengths), descriptions and aliases; the `# --- group ---`
comments in the class body give the sections, in source order. The output depends on nothing
else (not the environment, not the clock), so the checked-in files can be compared with a fresh
rendering in CI: `hsi config docs --check`, or `--write` to regenerate them.

Secrets (fields typed `SecretStr`, alone or in a list) never show a default value.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Literal

import annotated_types
from pydantic import AliasChoices, AliasPath, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode

from hsi.settings.model import RUNTIME_ENV_VAR, Settings

__all__ = [
    "DOCS_PATH",
    "ENV_EXAMPLE_PATH",
    "REGENERATE_COMMAND",
    "SettingDoc",
    "describe_settings",
    "generated_files",
    "render_env_example",
    "render_markdown",
    "stale_files",
    "write_files",
]

DOCS_PATH = Path("docs") / "configuration.md"
ENV_EXAMPLE_PATH = Path(".env.example")
REGENERATE_COMMAND = "hsi config docs --write"

_GROUP_COMMENT = re.compile(r"^\s*#\s*---\s*(?P<name>.*?)\s*-*\s*$")
_FALLBACK_GROUP = "other"


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable as the reference shows it."""

    field: str  # the Settings attribute
    env: str  # the variable name
    aliases: tuple[str, ...]  # other names read as well (e.g. NEMOTRON_URL)
    group: str
    type: str  # readable: int, bool, path, list (comma-separated), embedded | rtdetr, …
    default: str | None  # as written in a .env file; None: unset (and always for secrets)
    constraints: tuple[str, ...]  # ">= 1", "<= 200", "pattern ^[a-z]+$", …
    description: str
    secret: bool


# --- reading the model --------------------------------------------------------------------------


def _field_groups(settings_cls: type[BaseModel]) -> dict[str, str]:
    """Field name → the `# --- group ---` comment above it, for the class and its model bases."""
    groups: dict[str, str] = {}
    for cls in reversed(settings_cls.__mro__):
        if (
            not isinstance(cls, type)
            or not issubclass(cls, BaseModel)
            or cls in (BaseModel, BaseSettings)
        ):
            continue
        try:
            lines, _ = inspect.getsourcelines(cls)
        except (OSError, TypeError):  # no source (e.g. a frozen application): one section
            continue
        comments = [
            (number, match.group("name"))
            for number, line in enumerate(lines, start=1)
            if (match := _GROUP_COMMENT.match(line)) and match.group("name")
        ]
        tree = ast.parse(textwrap.dedent("".join(lines)))
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                above = [name for number, name in comments if number < node.lineno]
                if above:
                    groups[node.target.id] = above[-1]
    return groups


def _env_names(name: str, info: FieldInfo, prefix: str) -> tuple[str, ...]:
    alias = info.validation_alias or info.alias
    if isinstance(alias, str):
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, AliasPath):  # pragma: no cover - not an environment variable
        names = []
    else:
        names = [f"{prefix}{name}"]
    unique = list(dict.fromkeys(n.upper() for n in names)) or [f"{prefix}{name}".upper()]
    return tuple(unique)


def _without_none(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _contains_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_contains_secret(arg) for arg in typing.get_args(annotation))


def _decodes_csv(info: FieldInfo) -> bool:
    return any(item is NoDecode or isinstance(item, NoDecode) for item in info.metadata)


def _type_name(annotation: Any, info: FieldInfo) -> str:
    parts = _without_none(annotation)
    if len(parts) > 1:
        return " | ".join(_type_name(part, info) for part in parts)
    annotation = parts[0]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(value) for value in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(str(member.value) for member in annotation)
    if origin in (list, tuple, set, frozenset):
        return "list (comma-separated)" if _decodes_csv(info) else "list (JSON)"
    if origin is dict:
        return "JSON object"
    if annotation is SecretStr:
        return "str"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    if annotation in (bool, int, float, str):
        return str(annotation.__name__)
    return str(getattr(annotation, "__name__", annotation))


# Each annotated-types constraint: the attribute holding its bound, and how the docs write it.
_CONSTRAINTS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Ge, "ge", ">= {}"),
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Le, "le", "<= {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.MultipleOf, "multiple_of", "multiple of {}"),
    (annotated_types.MinLen, "min_length", "at least {} long"),
    (annotated_types.MaxLen, "max_length", "at most {} long"),
)


def _constraints(info: FieldInfo) -> tuple[str, ...]:
    out: list[str] = []
    for item in info.metadata:
        for kind, bound, text in _CONSTRAINTS:
            if isinstance(item, kind):
                out.append(text.format(getattr(item, bound)))
                break
        else:
            pattern = getattr(item, "pattern", None)
            if pattern is not None:
                out.append(f"pattern {pattern}")
    return tuple(out)


def _default_value(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        factory = typing.cast(Callable[[], Any], info.default_factory)
        return factory()
    return None if info.is_required() else info.default


def _env_text(value: Any, csv: bool) -> str | None:
    """A default as a .env file would spell it; None for "unset"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_env_text(item, csv) or "" for item in value]
        return ",".join(items) if csv else json.dumps(items)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def describe_settings(settings_cls: type[BaseModel] = Settings) -> list[SettingDoc]:
    """Every field of `settings_cls` in source order, with its group."""
    groups = _field_groups(settings_cls)
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    docs: list[SettingDoc] = []
    for name, info in settings_cls.model_fields.items():
        env, *aliases = _env_names(name, info, prefix)
        secret = _contains_secret(info.annotation)
        default = None if secret else _env_text(_default_value(info), _decodes_csv(info))
        docs.append(
            SettingDoc(
                field=name,
                env=env,
                aliases=tuple(aliases),
                group=groups.get(name, _FALLBACK_GROUP),
                type=_type_name(info.annotation, info),
                default=default,
                constraints=_constraints(info),
                description=" ".join((info.description or "").split()),
                secret=secret,
            )
        )
    return docs


def _grouped(docs: list[SettingDoc]) -> list[tuple[str, list[SettingDoc]]]:
    order: dict[str, list[SettingDoc]] = {}
    for doc in docs:
        order.setdefault(doc.group, []).append(doc)
    return list(order.items())


def _title(group: str) -> str:
    return group[:1].upper() + group[1:]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


# --- Markdown -----------------------------------------------------------------------------------

_MD_INTRO = f"""\
# Configuration reference

<!-- Generated from hsi/settings/model.py by `{REGENERATE_COMMAND}`; do not edit by hand. -->

HSI reads every setting from, strongest first: environment variables (names are
case-insensitive), the file named by `{RUNTIME_ENV_VAR}`, `.env` in the working directory, and
the defaults below. [`.env.example`](../.env.example) lists the same variables ready to copy;
`hsi config show` prints the values in effect with secrets masked.

- `bool`: `true` or `false` (`1`/`0`, `yes`/`no`, `on`/`off` work too).
- `path`: a file or folder; relative paths start from the working directory.
- `list (comma-separated)`: `a,b,c`, or a JSON list such as `["a", "b"]`.
- `JSON object`: e.g. `{{"car": 0.6}}`.
- *unset*: no value; the description says what happens then. Secrets never show a default.
"""


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _markdown_row(doc: SettingDoc) -> str:
    if doc.default is None:
        default = "*unset*"
    elif doc.default == "":
        default = "*empty*"
    else:
        default = _code(doc.default)
    constraints = ", ".join(
        f"pattern {_code(c.removeprefix('pattern '))}" if c.startswith("pattern ") else c
        for c in doc.constraints
    )
    notes = [doc.description] if doc.description else []
    if doc.aliases:
        notes.append("Also read from " + ", ".join(_code(a) for a in doc.aliases) + ".")
    if doc.secret:
        notes.append("**Secret**: masked by `hsi config show` and in logs.")
    cells = [_code(doc.env), doc.type, default, constraints, " ".join(notes)]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render_markdown(settings_cls: type[BaseModel] = Settings) -> str:
    """The Markdown reference: one section per settings group, one table row per variable."""
    grouped = _grouped(describe_settings(settings_cls))
    lines = [_MD_INTRO, "## Sections", ""]
    lines += [f"- [{_title(group)}](#{_anchor(_title(group))})" for group, _ in grouped]
    for group, docs in grouped:
        lines += [
            "",
            f"## {_title(group)}",
            "",
            "| Variable | Type | Default | Constraints | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [_markdown_row(doc) for doc in docs]
    return "\n".join(lines) + "\n"


# --- .env.example -------------------------------------------------------------------------------

_ENV_INTRO = f"""\
# HSI configuration: copy this file to .env and uncomment the lines you change.
# Generated from hsi/settings/model.py by `{REGENERATE_COMMAND}`; do not edit by hand.
# Each line shows the default (empty: unset); secrets have none. Reference: docs/configuration.md
# Sources, strongest first: environment variables, the file named by {RUNTIME_ENV_VAR},
# .env in the working directory, the defaults.
"""


def _dotenv_value(value: str) -> str:
    if value and not re.search(r"[\s#\"'\\$`]", value):
        return value
    if not value:
        return ""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _env_comment(doc: SettingDoc) -> str:
    facts = [doc.type]
    if doc.constraints:
        facts.append(", ".join(doc.constraints))
    if doc.secret:
        facts.append("secret")
    if doc.aliases:
        facts.append("also " + ", ".join(doc.aliases))
    summary = "[" + "; ".join(facts) + "]"
    return f"# {doc.description} {summary}" if doc.description else f"# {summary}"


def render_env_example(settings_cls: type[BaseModel] = Settings) -> str:
    """A `.env.example` with every variable as a commented `# NAME=default` line."""
    lines = [_ENV_INTRO.rstrip("\n")]
    for group, docs in _grouped(describe_settings(settings_cls)):
        lines += ["", f"# --- {_title(group)} ---"]
        for doc in docs:
            lines += ["", _env_comment(doc), f"# {doc.env}={_dotenv_value(doc.default or '')}"]
    return "\n".join(lines) + "\n"


# --- the checked-in files -----------------------------------------------------------------------


def generated_files(settings_cls: type[BaseModel] = Settings) -> dict[Path, str]:
    """Path (relative to the repository root) → content it must have."""
    return {
        DOCS_PATH: render_markdown(settings_cls),
        ENV_EXAMPLE_PATH: render_env_example(settings_cls),
    }


def stale_files(root: Path = Path(), settings_cls: type[BaseModel] = Settings) -> list[Path]:
    """The generated files under `root` that are missing or differ from a fresh rendering."""
    stale = []
    for relative, content in generated_files(settings_cls).items():
        path = root / relative
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != content:
            stale.append(relative)
    return stale


def write_files(root: Path = Path(), settings_cls: type[BaseModel] = Settings) -> list[Path]:
    """Write the generated files under `root` that changed; return their relative paths."""
    written = []
    files = generated_files(settings_cls)
    for relative in stale_files(root, settings_cls):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[relative], encoding="utf-8", newline="\n")
        written.append(relative)
    return written
