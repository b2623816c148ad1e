"""Write the maps table as Parquet straight from each batch, without holding a row group.

Every value has the same size (a required fixed-size binary per unit, a required int32
image id) and nothing is compressed, so where each batch lands in the file is known
before the first image: one plain data page per column chunk, at an offset fixed by the
row group and the column. Each batch is written there with `pwrite`, and the footer is
written last. A Parquet library would first gather the whole row group (64 MB) in memory;
on a busy machine, touching that fresh memory cost as much as the write itself.

Only the little of the Thrift compact protocol that a page header and footer need is here.
"""

from __future__ import annotations

import errno
import itertools
import os
import struct

import numpy as np
import torch

# Thrift compact types, and the Parquet enum values used.
_BOOL_TRUE, _BOOL_FALSE, _I16, _I32, _I64, _BINARY, _LIST, _STRUCT = 1, 2, 4, 5, 6, 8, 9, 12
_INT32, _FIXED_LEN_BYTE_ARRAY = 1, 7
_REQUIRED, _PLAIN, _RLE, _UNCOMPRESSED, _DATA_PAGE = 0, 0, 3, 0, 0
CREATED_BY = "nexplain maps writer"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _value(kind: int, value) -> bytes:
    if kind in (_I16, _I32, _I64):
        return _varint((value << 1) ^ (value >> 63))  # zigzag
    if kind == _BINARY:
        data = value.encode() if isinstance(value, str) else bytes(value)
        return _varint(len(data)) + data
    if kind == _STRUCT:
        return value  # already encoded by _struct
    if kind == _LIST:
        element, items = value
        head = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + _varint(len(items))
        return head + b"".join(_value(element, item) for item in items)
    raise ValueError(f"thrift type {kind}")


def _struct(*fields) -> bytes:
    """A struct of (field id, type, value) in increasing id order; None values are left out."""
    out, last = bytearray(), 0
    for fid, kind, value in fields:
        if value is None:
            continue
        if kind == _BOOL_TRUE:
            kind = _BOOL_TRUE if value else _BOOL_FALSE  # a bool lives in the field header
        out.append((fid - last) << 4 | kind)  # every id delta here is 1..15
        last = fid
        if kind not in (_BOOL_TRUE, _BOOL_FALSE):
            out += _value(kind, value)
    return bytes(out) + b"\0"


def _page_header(n_values: int, n_bytes: int) -> bytes:
    return _struct((1, _I32, _DATA_PAGE), (2, _I32, n_bytes), (3, _I32, n_bytes),
                   (5, _STRUCT, _struct((1, _I32, n_values), (2, _I32, _PLAIN),
                                        (3, _I32, _RLE), (4, _I32, _RLE))))


class MapsParquetWriter:
    """A Parquet file of `image_id` (int32) and `columns` (fixed-size binary of `value_bytes`),
    all required, in row groups of `rows_per_group` rows, `n_rows` in all, ids ascending.

    `write(ids, block)` takes the next rows: ids (B,) and values (columns, B, value_bytes / 4)
    float32, any strides; `close()` writes the footer, with `metadata` as key-value pairs.
    """

    def __init__(self, path, columns: list[str], value_bytes: int, n_rows: int,
                 rows_per_group: int, metadata: dict[str, str]):
        self.columns, self.value_bytes, self.n_rows, self.metadata = columns, value_bytes, n_rows, metadata
        self.groups = [min(rows_per_group, n_rows - start) for start in range(0, n_rows, rows_per_group)]
        self.rows_per_group = rows_per_group
        self.starts, self.headers, self.sizes, at = [], [], [], 4  # after the magic
        for rows in self.groups:  # each group's chunks: image_id, then one per column
            headers = [_page_header(rows, 4 * rows)] + [_page_header(rows, value_bytes * rows)] * len(columns)
            sizes = [len(headers[0]) + 4 * rows] + [len(headers[1]) + value_bytes * rows] * len(columns)
            self.starts.append([at + before for before in itertools.accumulate(sizes, initial=0)][:-1])
            self.headers.append(headers)
            self.sizes.append(sizes)
            at += sum(sizes)
        self.footer_at = at
        self.id_range = [[None, None] for _ in self.groups]
        self.written = 0
        self.tile = None
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _pwrite(self.fd, [b"PAR1"], 0)

    def write(self, ids: np.ndarray, block) -> None:
        start = 0
        while start < len(ids):
            g, row = divmod(self.written, self.rows_per_group)
            stop = start + min(len(ids) - start, self.groups[g] - row)
            self._write_rows(g, row, ids[start:stop], block[:, start:stop])
            self.written += stop - start
            start = stop

    def _write_rows(self, g: int, row: int, ids: np.ndarray, block) -> None:
        first = row == 0
        ids = np.ascontiguousarray(ids, "<i4")
        self.id_range[g] = [ids[0] if first else self.id_range[g][0], ids[-1]]
        values = self._contiguous(block)
        chunks = [(ids, 4)] + [(values[u], self.value_bytes) for u in range(len(self.columns))]
        for start, head, (data, width) in zip(self.starts[g], self.headers[g], chunks):
            if first:  # the page header goes in front of the chunk's first rows
                _pwrite(self.fd, [head, data], start)
            else:
                _pwrite(self.fd, [data], start + len(head) + row * width)

    def _contiguous(self, block) -> np.ndarray:
        """block (columns, B, width) as a float32 array whose [u] are C-contiguous: as is when
        they already are, else copied into a reused tile (so no fresh memory per batch)."""
        if block.stride(2) == 1 and block.stride(1) == block.shape[2]:
            return block.numpy()
        n = block.shape[1]
        if self.tile is None or self.tile.shape[1] < n:
            self.tile = torch.empty((block.shape[0], n, block.shape[2]), dtype=torch.float32)
        tile = self.tile[:, :n]
        _copy_units_major(tile, block)
        return tile.numpy()

    def close(self) -> None:
        """Write the footer (the file is complete only after this)."""
        if self.written != self.n_rows:
            raise ValueError(f"wrote {self.written} rows of the {self.n_rows} announced")
        footer = self._footer()
        _pwrite(self.fd, [footer, struct.pack("<I", len(footer)), b"PAR1"], self.footer_at)
        self.abort()

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _footer(self) -> bytes:
        names = ["image_id"] + self.columns
        schema = [_struct((4, _BINARY, "schema"), (5, _I32, len(names)))]
        schema.append(_struct((1, _I32, _INT32), (3, _I32, _REQUIRED), (4, _BINARY, "image_id")))
        schema += [_struct((1, _I32, _FIXED_LEN_BYTE_ARRAY), (2, _I32, self.value_bytes), (3, _I32, _REQUIRED),
                           (4, _BINARY, name)) for name in self.columns]
        groups = []
        for g, rows in enumerate(self.groups):
            chunks, total = [], sum(self.sizes[g])
            low, high = (struct.pack("<i", v) for v in self.id_range[g])
            id_stats = _struct((1, _BINARY, high), (2, _BINARY, low), (3, _I64, 0),  # 1, 2: for old readers
                               (5, _BINARY, high), (6, _BINARY, low))
            for k, (name, size) in enumerate(zip(names, self.sizes[g])):
                stats = id_stats if k == 0 else None
                meta = _struct((1, _I32, _INT32 if k == 0 else _FIXED_LEN_BYTE_ARRAY),
                               (2, _LIST, (_I32, [_RLE, _PLAIN])), (3, _LIST, (_BINARY, [name])),
                               (4, _I32, _UNCOMPRESSED), (5, _I64, rows), (6, _I64, size), (7, _I64, size),
                               (9, _I64, self.starts[g][k]), (12, _STRUCT, stats))
                chunks.append(_struct((2, _I64, 0), (3, _STRUCT, meta)))
            sorting = _struct((1, _I32, 0), (2, _BOOL_TRUE, False), (3, _BOOL_TRUE, False))
            groups.append(_struct((1, _LIST, (_STRUCT, chunks)), (2, _I64, total), (3, _I64, rows),
                                  (4, _LIST, (_STRUCT, [sorting])), (5, _I64, self.starts[g][0]),
                                  (6, _I64, total), (7, _I16, g if g < 1 << 15 else None)))  # ordinal: optional, i16
        key_values = [_struct((1, _BINARY, k), (2, _BINARY, v)) for k, v in self.metadata.items()]
        type_order = _struct((1, _STRUCT, _struct()))
        return _struct((1, _I32, 2), (2, _LIST, (_STRUCT, schema)), (3, _I64, self.n_rows),
                       (4, _LIST, (_STRUCT, groups)), (5, _LIST, (_STRUCT, key_values)),
                       (6, _BINARY, CREATED_BY), (7, _LIST, (_STRUCT, [type_order] * len(names))))


def _pwrite(fd: int, parts: list, offset: int) -> None:
    want = sum(memoryview(part).nbytes for part in parts)
    done = os.pwritev(fd, parts, offset)
    if done != want:  # a regular file writes short only when the disk is full
        raise OSError(errno.ENOSPC, f"wrote {done} of {want} bytes at offset {offset}: disk full?")


def _copy_units_major(dst, src) -> None:
    """dst[:] = src, both (units, images, width) torch tensors. Out of channels_last (units
    innermost), an image at a time: torch copies that 2-D transpose in tiles, 2.5x faster
    than one 3-D copy."""
    if src.stride(0) < src.stride(2):
        for k in range(src.shape[1]):
            dst[:, k].copy_(src[:, k])
    else:
        dst.copy_(src)
