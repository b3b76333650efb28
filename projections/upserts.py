"""Turning many row upserts into few SQL statements, with the result of applying them in order.

`plan(ops)` groups the upserts of a batch by table and column set, merges upserts of the same row
in Python with the same rules the SQL uses (`combine`), and yields one multi-row statement per
group; rows are sorted by key, and statements follow `WRITE_ORDER`, so that concurrent projectors
take their row locks in one order. When a row is upserted by two different column sets, the
groups are cut there so that the order of the upserts is kept. `upsert_sql` renders one statement:
the rows travel as one JSON parameter read with `json_to_recordset` (which reads the text as it
goes, without building a `jsonb` value first).

`FinalRows` is the same merging taken to its end, for a rebuild's bulk load into empty tables:
every upsert is folded into the row it names (`fold`), as its statement would change that row —
the columns `upsert_sql` updates, each merged by `combine`, a column no upsert gave yet counting
as its default — and what is left is the final rows, to be written as they are.

All of it is pure; `projections.projector` and `projections.bulk` execute it.
"""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from projections.rows import Merge, RowOp, check_shape
from projections.tables import (
    BY_NAME,
    WRITE_ORDER,
    column_names,
    key_of,
    qualified,
    quote_ident,
    sql_type,
)

Signature = tuple[tuple[str, Merge], ...]


@dataclass(frozen=True)
class Statement:
    """One multi-row upsert: `rows` hold the values of `columns`, merged as `merges` say."""

    table: str
    columns: tuple[str, ...]
    merges: tuple[Merge, ...]
    rows: tuple[tuple[Any, ...], ...]

    @property
    def signature(self) -> Signature:
        return tuple(zip(self.columns, self.merges, strict=True))


@dataclass(frozen=True)
class _Shape:
    """What `plan` needs of one op shape: its signature, getters for its key and values, and
    how repeated upserts of one row combine."""

    table: str
    signature: Signature
    key: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    merges: tuple[Merge, ...]
    replaces: bool  # every column merges with SET: a later upsert's values replace the row's
    updates: Signature  # the columns an upsert changes in a row that exists (`upsert_sql`)
    replaced: tuple[str, ...]  # those of `updates` that merge with SET
    replacing: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # their values
    combined: Signature  # the other `updates`


def _getter(columns: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """`values → tuple(values[c] for c in columns)`, as one C call."""
    if len(columns) == 1:
        (column,) = columns
        return lambda values: (values[column],)
    return operator.itemgetter(*columns)


@functools.lru_cache(maxsize=1024)
def _shape_of(
    table: str, columns: tuple[str, ...], merges: tuple[tuple[str, Merge], ...]
) -> _Shape:
    check_shape(table, (*columns, *(column for column, _ in merges)))
    described = BY_NAME[table]
    key = key_of(described)
    given, merge = set(columns), dict(merges)
    signature = tuple(
        (column, Merge.SET if column in key else merge.get(column, Merge.SET))
        for column in column_names(described)
        if column in given
    )
    merged = tuple(m for _, m in signature)
    updates = _updated(table, signature)
    replaced = tuple(c for c, m in updates if m is Merge.SET)
    return _Shape(
        table,
        signature,
        _getter(key),
        _getter(tuple(c for c, _ in signature)),
        merged,
        all(m is Merge.SET for m in merged),
        updates,
        replaced,
        _getter(replaced) if replaced else lambda _: (),
        tuple((c, m) for c, m in updates if m is not Merge.SET),
    )


def _updated(table: str, signature: Signature) -> Signature:
    """The columns of `signature` that an upsert changes in a row that exists: neither key
    columns nor `KEEP` ones (those are written only when the row is created)."""
    key = key_of(BY_NAME[table])
    return tuple(
        (column, merge)
        for column, merge in signature
        if column not in key and merge is not Merge.KEEP
    )


def _shape(op: RowOp) -> _Shape:
    """The op's columns in table order, each with its merge (cached: ops come in few shapes)."""
    return _shape_of(op.table, tuple(op.values), tuple(op.merge.items()))


def _least(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _greatest(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else max(a, b)


def combine(old: Any, new: Any, merge: Merge) -> Any:
    """The value of one upsert that has the effect of upserting `old`, then `new`."""
    if merge is Merge.SET:
        return new
    if merge is Merge.FILL:
        return new if old is None else old
    if merge is Merge.KEEP:
        return old
    if merge is Merge.ADD:
        if old is None or new is None:
            return new if old is None else old
        return old + new
    if merge is Merge.LEAST:
        return _least(old, new)
    return _greatest(old, new)


# (table, signature) → row key → the row's values
_Groups = dict[tuple[str, Signature], dict[tuple[Any, ...], tuple[Any, ...]]]


def _statements(groups: _Groups) -> list[Statement]:
    order = {table: index for index, table in enumerate(WRITE_ORDER)}
    ordered = sorted(enumerate(groups.items()), key=lambda item: (order[item[1][0][0]], item[0]))
    return [
        Statement(
            table=table,
            columns=tuple(column for column, _ in signature),
            merges=tuple(merge for _, merge in signature),
            rows=tuple(rows[key] for key in _sorted_keys(rows)),
        )
        for _, ((table, signature), rows) in ordered
    ]


def _sort_key(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


def _fast_sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # A UUID's text is its 128-bit number in hex at fixed width, so its number sorts the same;
    # anything else sorts by its text, as in `_sort_key`.
    return tuple(part.int if type(part) is uuid.UUID else str(part) for part in key)


def _fast_single_key(key: tuple[Any, ...]) -> Any:
    # `_fast_sort_key` of a one-column key, without the tuple (the same order).
    part = key[0]
    return part.int if type(part) is uuid.UUID else str(part)


def _sorted_keys(rows: Mapping[tuple[Any, ...], Any]) -> list[tuple[Any, ...]]:
    """The keys in `_sort_key` order (fast for UUID keys; a column mixing UUIDs with other
    values cannot compare fast, and is sorted by text)."""
    try:
        if all(len(key) == 1 for key in rows):
            return sorted(rows, key=_fast_single_key)
        return sorted(rows, key=_fast_sort_key)
    except TypeError:
        return sorted(rows, key=_sort_key)


def plan(ops: Iterable[RowOp]) -> list[Statement]:
    """Statements that leave the tables as applying `ops` one by one, in order, would.

    The ops are cut into segments where a row is upserted with another column set than before
    in the segment; each segment merges its upserts per row and becomes statements.
    """
    segments: list[_Groups] = []
    groups: _Groups = {}
    touched: dict[tuple[str, tuple[Any, ...]], Signature] = {}
    for op in ops:
        shape = _shape(op)
        signature = shape.signature
        table = op.table
        key = shape.key(op.values)
        known = touched.get((table, key))
        if known is not None and known is not signature and known != signature:
            segments.append(groups)
            groups, touched = {}, {}
        rows = groups.get((table, signature))
        if rows is None:
            rows = groups[(table, signature)] = {}
        values = shape.values(op.values)
        current = rows.get(key)
        if current is None or shape.replaces:
            rows[key] = values
        else:
            rows[key] = tuple(
                combine(old, new, merge)
                for old, new, merge in zip(current, values, shape.merges, strict=True)
            )
        touched[(table, key)] = signature
    segments.append(groups)
    return [statement for segment in segments for statement in _statements(segment)]


# --- final rows ---------------------------------------------------------------------------------

# A row being merged: its columns so far, by name (columns no upsert gave are absent).
Row = Mapping[str, Any]


def column_default(table: str, column: str) -> Any:
    """The value `column` of a new row holds when no upsert gave it: its server default (None
    without one). Only plain literals are read; another default cannot be merged into."""
    default = BY_NAME[table].c[column].server_default
    if default is None:
        return None
    sql = str(getattr(default, "arg", ""))
    if sql.isdigit():
        return int(sql)
    if sql == "'{}'":
        return []
    if len(sql) >= 2 and sql[0] == sql[-1] == "'" and "'" not in sql[1:-1]:
        return sql[1:-1]
    raise ValueError(f"{table}.{column}: its default {sql!r} cannot be merged into in Python")


def _fold(row: Row, values: Mapping[str, Any], shape: _Shape) -> Row:
    merged = dict(row)
    merged.update(zip(shape.replaced, shape.replacing(values), strict=True))
    for column, merge in shape.combined:
        old = merged[column] if column in merged else column_default(shape.table, column)
        merged[column] = combine(old, values[column], merge)
    return merged


def fold(row: Row | None, op: RowOp) -> Row:
    """The row after upserting `op` onto it (`row` None: the row does not exist yet), as the
    statement `upsert_sql` makes of `op` leaves it. Columns that no upsert gave stay absent:
    they hold their default."""
    if row is None:
        return op.values
    return _fold(row, op.values, _shape(op))


@dataclass(frozen=True)
class TableRows:
    """Final rows of one table that hold the same columns, in that order."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class FinalRows:
    """What upserting ops one by one, in order, into empty tables leaves: the rows folded in
    memory (`fold`), taken out table by table."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[tuple[Any, ...], Row]] = {}

    def add(self, ops: Iterable[RowOp]) -> None:
        tables = self._tables
        for op in ops:
            rows = tables.get(op.table)
            if rows is None:
                rows = tables[op.table] = {}
            shape = _shape(op)
            key = shape.key(op.values)
            row = rows.get(key)
            rows[key] = op.values if row is None else _fold(row, op.values, shape)

    def count(self, tables: Iterable[str]) -> int:
        """How many rows of `tables` are held."""
        return sum(len(self._tables.get(table, ())) for table in tables)

    def keys(self, table: str) -> list[tuple[Any, ...]]:
        """The keys of the rows of `table` held."""
        return list(self._tables.get(table, ()))

    def take(self, tables: Iterable[str]) -> list[TableRows]:
        """The rows of `tables` held (no longer held afterwards), in `WRITE_ORDER`, each table's
        rows grouped by the columns they hold."""
        wanted = set(tables)
        taken: list[TableRows] = []
        for table in WRITE_ORDER:
            rows = self._tables.pop(table, None) if table in wanted else None
            if not rows:
                continue
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for row in rows.values():
                columns = tuple(row)
                group = groups.get(columns)
                if group is None:
                    group = groups[columns] = []
                group.append(tuple(row.values()))
            taken.extend(TableRows(table, columns, group) for columns, group in groups.items())
        return taken


# --- SQL ----------------------------------------------------------------------------------------

_UPDATE = {
    Merge.SET: "EXCLUDED.{c}",
    Merge.FILL: "COALESCE(t.{c}, EXCLUDED.{c})",
    Merge.ADD: "t.{c} + EXCLUDED.{c}",
    Merge.LEAST: "LEAST(t.{c}, EXCLUDED.{c})",
    Merge.GREATEST: "GREATEST(t.{c}, EXCLUDED.{c})",
}


def upsert_sql(statement: Statement, schema: str | None = None) -> str:
    """`INSERT … SELECT FROM json_to_recordset(:rows) … ON CONFLICT (key) DO UPDATE SET …`."""
    table = BY_NAME[statement.table]
    columns = ", ".join(quote_ident(c) for c in statement.columns)
    record = ", ".join(f"{quote_ident(c)} {sql_type(table, c)}" for c in statement.columns)
    key = key_of(table)
    updates = [
        f"{quote_ident(column)} = " + _UPDATE[merge].format(c=quote_ident(column))
        for column, merge in _updated(statement.table, statement.signature)
    ]
    action = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
    # Identifiers come from the table metadata and are quoted; every value is a bound parameter.
    return (
        f"INSERT INTO {qualified(table.name, schema)} AS t ({columns}) "  # noqa: S608
        f"SELECT {columns} FROM ROWS FROM (json_to_recordset(CAST(:rows AS json)) "
        f"AS ({record})) WITH ORDINALITY AS r ORDER BY r.ordinality "
        f"ON CONFLICT ({', '.join(quote_ident(c) for c in key)}) {action}"
    )


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; the replacement character keeps the value deterministic.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def rows_json(statement: Statement) -> str:
    """The `:rows` parameter of `upsert_sql`: the rows as a JSON array of objects."""
    columns = statement.columns
    data = orjson.dumps([dict(zip(columns, row, strict=True)) for row in statement.rows])
    if b"\\u0000" in data:  # rare: clean the strings and encode again
        data = orjson.dumps(
            [
                {column: _clean(value) for column, value in zip(columns, row, strict=True)}
                for row in statement.rows
            ]
        )
    return data.decode()


def checkpoint_sql(schema: str | None = None) -> str:
    """Insert the tracking rows of a batch; RETURNING names the entries not applied before."""
    table = qualified("projection_checkpoints", schema)
    return (
        f"INSERT INTO {table} (projection, stream, entry_id) "  # noqa: S608 (quoted identifier)
        "SELECT :projection, :stream, e "
        "FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS u(e, n) ORDER BY n "
        "ON CONFLICT DO NOTHING RETURNING entry_id"
    )
