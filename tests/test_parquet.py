"""nexplain.activations.parquet: the maps table's own Parquet writer, checked against pyarrow."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nexplain.activations.parquet import _I64, _LIST, _I32, MapsParquetWriter, _value

UNITS, ROWS, WIDTH = 17, 37, 6  # more than 14 columns: Thrift's long list header


def _write(path, values, ids, batches, rows_per_group=10, strided=False):
    names = [f"u{k:04d}" for k in range(UNITS)]
    writer = MapsParquetWriter(path, names, 4 * WIDTH, len(ids), rows_per_group, {"nexplain": '{"k": 1}'})
    start = 0
    for size in batches:
        block = values[:, start:start + size]
        if strided:  # units innermost, as a channels_last layer's maps are
            block = block.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        writer.write(ids[start:start + size], block)
        start += size
    writer.close()
    return names


def _data():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(UNITS, ROWS, WIDTH, generator=gen)
    ids = np.arange(ROWS, dtype=np.int32) * 3 + 5
    return values, ids


def test_pyarrow_reads_what_was_written(tmp_path):
    values, ids = _data()
    names = _write(tmp_path / "m.parquet", values, ids, [7, 1, 20, 9], strided=True)
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.column_names == ["image_id"] + names
    assert table.column("image_id").to_numpy().tolist() == ids.tolist()
    for u, name in enumerate(names):
        column = table.column(name).combine_chunks()
        assert column.type == pa.binary(4 * WIDTH)
        got = np.frombuffer(column.buffers()[1], "<f4").reshape(ROWS, WIDTH)
        np.testing.assert_array_equal(got, values[u].numpy())


def test_footer(tmp_path):
    values, ids = _data()
    _write(tmp_path / "m.parquet", values, ids, [ROWS])
    pf = pq.ParquetFile(tmp_path / "m.parquet")
    meta = pf.metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [10, 10, 10, 7]
    assert pf.schema_arrow.metadata[b"nexplain"] == b'{"k": 1}'
    assert not any(field.nullable for field in pf.schema_arrow)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(0).statistics
        assert (stats.min, stats.max) == (ids[10 * g], ids[min(10 * g + 9, ROWS - 1)])
        assert not group.column(1).is_stats_set
        assert group.sorting_columns == (pq.SortingColumn(0),)
        assert group.column(1).compression == "UNCOMPRESSED"
    # row-group statistics let a reader skip groups
    some = pq.read_table(tmp_path / "m.parquet", filters=[("image_id", ">=", int(ids[30]))])
    assert some.column("image_id").to_numpy().tolist() == ids[30:].tolist()


def test_batching_and_strides_do_not_change_bytes(tmp_path):
    values, ids = _data()
    _write(tmp_path / "a.parquet", values, ids, [ROWS])
    _write(tmp_path / "b.parquet", values, ids, [3, 11, 12, 11], strided=True)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_missing_rows_refused(tmp_path):
    values, ids = _data()
    writer = MapsParquetWriter(tmp_path / "m.parquet", ["u0000"], 4 * WIDTH, ROWS, 10, {})
    writer.write(ids[:5], values[:1, :5])
    with pytest.raises(ValueError, match="wrote 5 rows of the 37"):
        writer.close()
    writer.abort()


def test_thrift_values():
    assert _value(_I64, 300) == b"\xd8\x04"  # zigzag 600, as a varint
    assert _value(_I32, -1) == b"\x01"
    assert _value(_LIST, (_I32, [1] * 15))[:2] == b"\xf5\x0f"  # 15 items: the long header
