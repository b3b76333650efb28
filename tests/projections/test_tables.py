"""The table metadata the projectors write with and the API reads with matches the migrations."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import (
    Column,
    Computed,
    Connection,
    Index,
    Table,
    TextClause,
    UnaryExpression,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Inspector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import operators

from projections.tables import SEARCH_DOCUMENT, SEARCH_INDEX_LANGUAGE, TABLES, metadata

# Tables the migrations create that are not the read side's: the migration runner's own and
# the log handler's.
NOT_PROJECTED = frozenset({"schema_migrations", "logs"})
DIALECT = postgresql.dialect()
# PostgreSQL shows a default with its cast (`'active'::text`); the metadata states the value.
CAST = re.compile(r"::[a-z ]+(\[\])?$")
# A generated column is described by its kind; `test_search_document_is_the_generated_column`
# checks its expression (PostgreSQL spells it back in its own words).
GENERATED = "GENERATED ALWAYS AS (...) STORED"

Description = dict[str, Any]


def _column(name: str, type_: Any, nullable: bool, default: str | None) -> tuple[Any, ...]:
    return (name, type_.compile(dialect=DIALECT), nullable, default)


def _described_index(index: Index) -> tuple[Any, ...]:
    parts = []
    for expression in index.expressions:
        if isinstance(expression, UnaryExpression) and expression.modifier is operators.desc_op:
            parts.append(f"{expression.element.name} DESC")
        else:
            parts.append(expression.name)
    using = index.dialect_options["postgresql"]["using"] or "btree"
    return (tuple(parts), index.unique, using)


def _from_metadata(table: Table) -> Description:
    def default(column: Column[Any]) -> str | None:
        server_default = column.server_default
        if server_default is None:
            return None
        if isinstance(server_default, Computed):
            assert server_default.persisted, (table.name, column.name)
            return GENERATED
        assert isinstance(server_default.arg, TextClause), table.name
        return server_default.arg.text

    return {
        "columns": [_column(c.name, c.type, c.nullable, default(c)) for c in table.columns],
        "primary_key": [c.name for c in table.primary_key],
        "unique": {
            u.name: [c.name for c in u.columns]
            for u in table.constraints
            if isinstance(u, UniqueConstraint)
        },
        "indexes": {i.name: _described_index(i) for i in table.indexes},
    }


def _reflected(inspector: Inspector, table: str, schema: str) -> Description:
    def index(found: Any) -> tuple[Any, ...]:
        sorting = found.get("column_sorting", {})
        parts = tuple(
            f"{c} DESC" if "desc" in sorting.get(c, ()) else c for c in found["column_names"]
        )
        using = found["dialect_options"].get("postgresql_using", "btree")
        return (parts, found["unique"], using)

    def default(found: Any) -> str | None:
        if "computed" in found:
            return GENERATED if found["computed"].get("persisted") else "virtual"
        return None if found["default"] is None else CAST.sub("", found["default"])

    return {
        "columns": [
            _column(c["name"], c["type"], c["nullable"], default(c))
            for c in inspector.get_columns(table, schema)
        ],
        "primary_key": inspector.get_pk_constraint(table, schema)["constrained_columns"],
        "unique": {
            u["name"]: u["column_names"] for u in inspector.get_unique_constraints(table, schema)
        },
        "indexes": {
            i["name"]: index(i)
            for i in inspector.get_indexes(table, schema)
            if "duplicates_constraint" not in i  # the unique constraints' own indexes
        },
    }


async def test_metadata_matches_the_migrations(engine: AsyncEngine, db_schema: str) -> None:
    """Every projection table, column (type, nullability, default, order), primary key, unique
    constraint and index of the metadata is what the migrations create, and nothing else is."""

    def reflect(conn: Connection) -> tuple[set[str], dict[str, Description]]:
        inspector = inspect(conn)
        names = set(inspector.get_table_names(db_schema)) - NOT_PROJECTED
        return names, {name: _reflected(inspector, name, db_schema) for name in names}

    async with engine.connect() as conn:
        migrated, reflected = await conn.run_sync(reflect)
    assert set(metadata.tables) == migrated
    assert {t.name for t in TABLES} == migrated
    for name in sorted(migrated):
        assert _from_metadata(metadata.tables[name]) == reflected[name], name


async def test_search_document_is_the_generated_column(engine: AsyncEngine) -> None:
    """`SEARCH_DOCUMENT` in the index's language (what a search in another language computes)
    is what the migration's generated `events.search` holds, for summaries, reasoning, object
    types and zones with NULLs, empty strings and punctuation."""
    rows = [
        ("A person at the door", "Late; it's dark", ["person", "traffic light"], ["front_door"]),
        (None, None, [], []),
        ("Cars", None, ["car", "", None], ["drive"]),
        ("'quoted' \\ back", "x", ["it's"], []),
    ]
    async with engine.begin() as conn:
        for n, (summary, reasoning, object_types, zones) in enumerate(rows):
            await conn.execute(
                text(
                    "INSERT INTO events (id, camera_id, summary, reasoning, object_types, zones) "
                    "VALUES (:id, 'cam', :s, :r, :o, :z)"
                ),
                {"id": uuid.UUID(int=n + 1), "s": summary, "r": reasoning, "o": object_types,
                 "z": zones},
            )  # fmt: skip
        document = SEARCH_DOCUMENT.format(config=f"'{SEARCH_INDEX_LANGUAGE}'::regconfig")
        differing = await conn.scalar(
            text(f"SELECT count(*) FROM events WHERE search IS DISTINCT FROM ({document})")  # noqa: S608
        )
        person = await conn.scalar(
            text("SELECT id FROM events WHERE search @@ websearch_to_tsquery('english', 'person')")
        )
    assert differing == 0
    assert person == uuid.UUID(int=1)
