"""Result tables as Parquet with a `nexplain` JSON metadata entry: no timestamps, so the
same input gives the same bytes, and a clear error when a table cannot be read."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexplain.errors import DataError
from nexplain.io import atomic_path

META_KEY = b"nexplain"


def write_table(table: pa.Table | pd.DataFrame, path, metadata: dict) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    meta = {META_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")


def read_table(path, what: str = "table") -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None


def read_metadata(path) -> dict:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return json.loads((schema.metadata or {}).get(META_KEY, b"{}"))


def merge_parts(paths, order, drop: tuple[str, ...] = ()) -> tuple[pa.Table, dict]:
    """The table a one-shard run writes, from its shards: rows concatenated and put back in
    order by `order(table)` (row positions), `drop` columns removed. Every shard must carry the
    same metadata, which is returned with the table."""
    parts = [pq.read_table(p) for p in paths]
    metas = [read_metadata(p) for p in paths]
    if any(m != metas[0] for m in metas):
        raise DataError(f"shards {paths[0]} ... disagree on their metadata; rerun them together")
    table = pa.concat_tables([t for t in parts if t.num_rows] or parts[:1])
    table = table.take(pa.array(order(table), pa.int64())).drop_columns(list(drop)).combine_chunks()
    return table.cast(pa.schema([f.with_type(_item_lists(f.type)) for f in table.schema])), metas[0]


def _item_lists(t: pa.DataType) -> pa.DataType:
    """Parquet reads a list's values back as `element`; tables made in memory call them `item`."""
    if pa.types.is_list(t):
        return pa.list_(_item_lists(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_item_lists(t.value_type))
    return t


def write_merged(paths, path, order, drop: tuple[str, ...] = ()) -> pa.Table:
    """`merge_parts` written to `path`: the same bytes as a one-shard run's table."""
    table, meta = merge_parts(paths, order, drop)
    write_table(table, path, meta)
    return table
