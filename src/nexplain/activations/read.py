"""Read the activation tables that `nexplain.activations.activations` writes, without torch.

Both tables have one row per image (`image_id`, ascending) and one column per unit: the
summary a float32, the maps a fixed-size binary h x w map. Jobs that only read them start
about 2 s sooner than with the recorder's imports."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nexplain.errors import DataError

META_KEY = b"nexplain"
SUMMARY_LAYOUT = MAPS_LAYOUT = "image_major"  # one row per image, one column per unit
MAP_ENCODING = "float32 little-endian, row-major h x w"


def unit_columns(n_units: int) -> list[str]:
    width = max(4, len(str(n_units - 1)))
    return [f"u{k:0{width}d}" for k in range(n_units)]


def read_meta(path) -> dict:
    """The `nexplain` metadata of a summary or maps file."""
    return _meta(path, _parquet_file(path).schema_arrow)


def _parquet_file(path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read activations file {path}: {e}") from None


def _meta(path, schema: pa.Schema) -> dict:
    if not schema.metadata or META_KEY not in schema.metadata:
        raise DataError(f"{path} is not a nexplain activations file (no `nexplain` metadata)")
    return json.loads(schema.metadata[META_KEY])


def read_summary(path):
    """(image_ids (N,) int32, values (N, U) float32, meta)."""
    meta = read_meta(path)
    table = pq.read_table(path)
    ids = table.column("image_id").to_numpy().copy()
    values = np.empty((table.num_rows, meta["n_units"]), dtype=np.float32)
    for k, name in enumerate(unit_columns(meta["n_units"])):
        values[:, k] = table.column(name).to_numpy()
    return ids, values, meta


def read_unit_maps(path, unit: int):
    """(image_ids (n,) int32, maps (n, h, w) float32) of one unit: its column only."""
    pf, meta = open_maps(path)
    if not 0 <= unit < meta["n_units"]:
        raise DataError(f"{path}: unit {unit} out of range 0..{meta['n_units'] - 1}")
    h, w = meta["map_height"], meta["map_width"]
    table = pf.read(columns=["image_id", unit_columns(meta["n_units"])[unit]])
    maps, at = np.empty((table.num_rows, h, w), np.float32), 0
    for chunk in table.column(1).chunks:  # one per row group: copied once, into place
        maps[at:at + len(chunk)] = map_values(chunk, h, w)
        at += len(chunk)
    return table.column(0).to_numpy().copy(), maps


def read_all_maps(path, image_ids=None):
    """(image_ids (n,), maps (n, U, h, w) float32): every unit's map, for the images listed
    (all by default; an id not in the table is an error). Memory: n x U x h x w floats."""
    return _image_major(path, image_ids, peak=False)


def read_peaks(path):
    """(image_ids (N,), peaks (N, U) float32): each unit's spatial max on every image, the max
    of `read_all_maps` without holding the maps (N x U floats)."""
    return _image_major(path, None, peak=True)


def open_maps(path) -> tuple[pq.ParquetFile, dict]:
    """A maps table's ParquetFile and metadata (its footer parsed once), refusing any other table."""
    pf = _parquet_file(path)
    meta = _meta(path, pf.schema_arrow)
    if meta.get("layout") != MAPS_LAYOUT or meta.get("map_encoding") != MAP_ENCODING:
        raise DataError(f"{path} is not a maps table of this nexplain (layout {meta.get('layout')!r}, "
                        f"map encoding {meta.get('map_encoding')!r}; expected {MAPS_LAYOUT!r}, "
                        f"{MAP_ENCODING!r}); rerun its activations rule to rewrite it")
    return pf, meta


def _image_major(path, image_ids, peak: bool):
    pf, meta = open_maps(path)
    h, w, n_units = meta["map_height"], meta["map_width"], meta["n_units"]
    all_ids = pf.read(columns=["image_id"]).column(0).to_numpy()
    keep = np.ones(len(all_ids), bool)
    if image_ids is not None:
        wanted = np.unique(np.asarray(image_ids, np.int64))
        keep = np.isin(all_ids, wanted)
        if keep.sum() < len(wanted):
            raise DataError(f"{path}: {len(wanted) - keep.sum()} of the {len(wanted)} image ids asked for "
                            f"are not in the table (e.g. {np.setdiff1d(wanted, all_ids)[:3].tolist()})")
    out = np.empty((keep.sum(), n_units) if peak else (keep.sum(), n_units, h, w), np.float32)
    start = at = 0
    for g in range(pf.num_row_groups):
        rows = keep[start:start + pf.metadata.row_group(g).num_rows]
        start += len(rows)
        if not rows.any():
            continue
        t = pf.read_row_group(g)
        for u, column in enumerate(t.columns[1:]):
            maps = map_values(column, h, w)[rows]
            out[at:at + rows.sum(), u] = maps.max((1, 2)) if peak else maps
        at += rows.sum()
    return all_ids[keep].copy(), out


def map_values(column: pa.ChunkedArray | pa.Array, h: int, w: int) -> np.ndarray:
    """(n, h, w) float32 view of a maps table's unit column (fixed-size binary values of
    little-endian float32)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(arr.buffers()[1], "<f4", count=len(arr) * h * w, offset=arr.offset * arr.type.byte_width)
    return data.astype(np.float32, copy=False).reshape(-1, h, w)
