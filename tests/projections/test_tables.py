"""The table specs the projector writes with match the migrated tables."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.tables import TABLES

_TYPES = {
    "text": "text",
    "uuid": "uuid",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "bool": "boolean",
    "timestamptz": "timestamptz",
    "_text": "text[]",
}


async def test_specs_match_the_migrations(engine: AsyncEngine) -> None:
    """Columns, their types and the conflict keys agree with migrations/0002_projections.sql."""
    async with engine.connect() as conn:
        for spec in TABLES:
            rows = await conn.execute(
                text(
                    "SELECT column_name, udt_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = :t "
                    "ORDER BY ordinal_position"
                ),
                {"t": spec.name},
            )
            assert {name: _TYPES[udt] for name, udt in rows} == dict(spec.columns), spec.name
            key = await conn.execute(
                text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = to_regclass(:t) AND i.indisprimary"
                ),
                {"t": spec.name},
            )
            assert {r[0] for r in key} == set(spec.key), spec.name
