"""The table metadata the projectors write with and the API reads with matches the migrations."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    Connection,
    Index,
    Table,
    TextClause,
    UnaryExpression,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Inspector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import operators

from projections.tables import TABLES, metadata

# Tables the migrations create that are not the read side's: the migration runner's own and
# the log handler's.
NOT_PROJECTED = frozenset({"schema_migrations", "logs"})
DIALECT = postgresql.dialect()
# PostgreSQL shows a default with its cast (`'active'::text`); the metadata states the value.
CAST = re.compile(r"::[a-z ]+(\[\])?$")

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
    def default(server_default: Any) -> str | None:
        if server_default is None:
            return None
        assert isinstance(server_default.arg, TextClause), table.name
        return server_default.arg.text

    return {
        "columns": [
            _column(c.name, c.type, c.nullable, default(c.server_default)) for c in table.columns
        ],
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

    return {
        "columns": [
            _column(
                c["name"],
                c["type"],
                c["nullable"],
                None if c["default"] is None else CAST.sub("", c["default"]),
            )
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
