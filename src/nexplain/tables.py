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
