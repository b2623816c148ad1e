"""Concept tables of a Broden-format dataset: presence, pixel share and packed masks.

`build_concept_tables(ds, out_dir)` streams the dataset image by image and writes

- `concepts.parquet`: concept, number, name, category, n_images, n_pixels, kind
  ("image" when the concept only ever appears as an image-level label, else "pixel").
- `presence.parquet`: `image_id` (int32) + one bool column per concept, named by the
  concept name (duplicates become `<name>-<number>`), in concept order.
- `share.parquet`: same columns, float32 share of the mask the concept covers
  (1.0 for image-level labels).
- `masks/`: every (concept, image) mask with at least one pixel, bit-packed:
  - `bits.u8`: raw uint8 rows of `row_bytes` bytes; a row is
    `np.packbits(mask.reshape(-1), bitorder="big")` zero-padded to a multiple of
    8 bytes (so rows can be viewed as uint64 for popcounts). Rows are sorted by
    (concept, image_id), so one concept's rows are one contiguous slice.
  - `index.parquet`: concept (int32), image_id (int32), row (int64; -1 for
    image-level labels, which cover the whole mask and own no row), n_pixels (int32),
    sorted by (concept, image_id).
  - `meta.json`: N, C, sh, sw, row_bytes, bitorder, n_rows.

Cost. Disk: `bits.u8` is rows x row_bytes; real Broden at 112x112 has row_bytes =
1,568 and one row per (concept, image) pixel pair, so ~1M pairs -> ~1.6 GB; the
build needs twice that transiently (image-major temp file, then reordered).
Memory: one image's masks, one block of `ROWS_PER_BLOCK` presence/share rows
(block x C x 5 bytes, ~25 MB for C = 1,200, twice that while Arrow copies it) and
the pair index (32 bytes a pair, ~100 bytes a pair transiently while sorting and
writing it: ~0.1 GB per million pairs); no mask data is held beyond one image or one
copy block. Measured: 500 synthetic 112x112 images (9k pairs) peak at ~160 MB RSS,
of which ~125 MB is the imported libraries. `PackedMasks` memory-maps `bits.u8`,
so opening costs only the index (~20 bytes a pair).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nexplain.data.broden import BrodenDataset
from nexplain.errors import DataError
from nexplain.io import atomic_dir

BITORDER = "big"
ROWS_PER_BLOCK = 4096      # images per presence/share row group
COPY_ROWS = 4096           # rows per copy when reordering the packed masks
PARQUET = {"compression": "zstd"}


def row_bytes_for(shape: tuple[int, int]) -> int:
    """Bytes of one packed mask row: sh*sw bits rounded up to whole uint64 words."""
    return -(-shape[0] * shape[1] // 64) * 8


def pack_masks(masks: np.ndarray, row_bytes: int) -> np.ndarray:
    """(k, sh, sw) bool -> (k, row_bytes) uint8 rows, zero-padded."""
    k, sh, sw = masks.shape
    packed = np.packbits(masks.reshape(k, sh * sw), axis=1, bitorder=BITORDER)
    out = np.zeros((len(masks), row_bytes), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out


def column_names(concepts: pd.DataFrame) -> list[str]:
    """Concept column names: the name, or `<name>-<number>` where names collide."""
    counts = concepts["name"].value_counts()
    names = [f"{n}-{num}" if counts[n] > 1 or n == "image_id" else n
             for n, num in zip(concepts["name"], concepts["number"])]
    if len(set(names)) != len(names):
        raise DataError(f"concept names cannot be made unique: {sorted(names)[:10]}")
    return names


def concept_names(concepts_dir) -> list[str]:
    """`column_names` of a concept-tables folder's concepts.parquet: the names by concept id."""
    return column_names(pd.read_parquet(os.path.join(concepts_dir, "concepts.parquet")))


def _metadata(ds: BrodenDataset) -> dict[bytes, bytes]:
    meta = {"dataset": ds.root.name, "n_images": len(ds), "n_concepts": len(ds.concepts),
            "mask_shape": list(ds.mask_shape)}
    return {f"nexplain.{k}".encode(): json.dumps(v).encode() for k, v in meta.items()}


class _WideWriter:
    """Streams one N x C wide table (image_id + a column per concept) in row groups."""

    def __init__(self, path: Path, names: list[str], dtype: pa.DataType, metadata: dict):
        fields = [pa.field("image_id", pa.int32(), nullable=False)]
        fields += [pa.field(n, dtype, nullable=False) for n in names]
        self.schema = pa.schema(fields, metadata=metadata)
        self.writer = pq.ParquetWriter(path, self.schema, **PARQUET)

    def write(self, first_id: int, block: np.ndarray) -> None:
        ids = np.arange(first_id, first_id + len(block), dtype=np.int32)
        arrays = [pa.array(ids)] + [pa.array(col) for col in block.T]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


class _Pairs:
    """Growing (concept, image, temp row, n_pixels) records of present pairs."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def add(self, concepts, image_id, rows, n_pixels) -> None:
        rec = np.empty((len(concepts), 4), dtype=np.int64)
        rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3] = concepts, image_id, rows, n_pixels
        self.parts.append(rec)

    def sorted(self) -> np.ndarray:
        """All records sorted by (concept, image_id)."""
        rec = np.concatenate(self.parts) if self.parts else np.empty((0, 4), np.int64)
        self.parts = []  # free the pieces before the sorted copy is made
        return rec[np.lexsort((rec[:, 1], rec[:, 0]))]


def build_concept_tables(ds: BrodenDataset, out_dir: str | Path, progress: bool = True) -> None:
    """Write concepts/presence/share Parquet tables and packed masks (module docstring)."""
    n, c = len(ds), len(ds.concepts)
    names = column_names(ds.concepts)
    meta = _metadata(ds)
    with atomic_dir(out_dir) as tmp:
        masks_dir = tmp / "masks"
        masks_dir.mkdir()
        image_major = masks_dir / ".image_major.tmp"
        presence = _WideWriter(tmp / "presence.parquet", names, pa.bool_(), meta)
        share = _WideWriter(tmp / "share.parquet", names, pa.float32(), meta)
        with open(image_major, "wb") as bits:
            pairs = _stream_images(ds, presence, share, bits, progress)
        presence.close()
        share.close()
        index = _reorder_masks(image_major, pairs.sorted(), masks_dir / "bits.u8",
                               row_bytes_for(ds.mask_shape))
        image_major.unlink()
        _write_index(index, masks_dir / "index.parquet", meta)
        _write_meta(masks_dir / "meta.json", n, c, ds.mask_shape, index)
        _write_concepts(ds.concepts, index, tmp / "concepts.parquet", meta)


def _stream_images(ds, presence: _WideWriter, share: _WideWriter, bits, progress: bool) -> _Pairs:
    """One pass over the images: fill presence/share blocks, append packed rows image-major."""
    n, c = len(ds), len(ds.concepts)
    area = ds.mask_shape[0] * ds.mask_shape[1]
    row_bytes = row_bytes_for(ds.mask_shape)
    pairs, next_row = _Pairs(), 0
    bar = tqdm(total=n, disable=not progress, desc="concept masks", unit="img")
    for start in range(0, n, ROWS_PER_BLOCK):
        stop = min(start + ROWS_PER_BLOCK, n)
        pres = np.zeros((stop - start, c), dtype=bool)
        frac = np.zeros((stop - start, c), dtype=np.float32)
        for image_id in range(start, stop):
            m = ds.concept_masks(image_id)
            counts = m.masks.sum(axis=(1, 2))
            pres[image_id - start, m.concepts] = True
            frac[image_id - start, m.concepts] = counts / area
            pix = ~m.image_level
            rows = np.full(len(m.concepts), -1, dtype=np.int64)
            rows[pix] = np.arange(next_row, next_row + pix.sum())
            next_row += int(pix.sum())
            bits.write(pack_masks(m.masks[pix], row_bytes).tobytes())
            pairs.add(m.concepts, image_id, rows, counts)
            bar.update(1)
        presence.write(start, pres)
        share.write(start, frac)
    bar.close()
    return pairs


def _reorder_masks(src: Path, pairs: np.ndarray, dst: Path, row_bytes: int) -> np.ndarray:
    """Copy packed rows into (concept, image) order, COPY_ROWS at a time.

    Returns `pairs` with `row` rewritten in place to the final row numbers.
    """
    pixel = pairs[:, 2] >= 0
    src_rows = pairs[pixel, 2]
    pairs[pixel, 2] = np.arange(len(src_rows))
    with open(dst, "wb") as out:
        if len(src_rows):
            _copy_rows(src, src_rows, out, row_bytes)
    return pairs


def _copy_rows(src: Path, src_rows: np.ndarray, out, row_bytes: int) -> None:
    """Gather rows with one pread each. Not np.memmap: the kernel maps ~64 KB around
    every page fault, so a scattered gather would map most of the file into RSS."""
    fd = os.open(src, os.O_RDONLY)
    try:
        for i in range(0, len(src_rows), COPY_ROWS):
            out.write(b"".join(os.pread(fd, row_bytes, int(r) * row_bytes)
                               for r in src_rows[i:i + COPY_ROWS]))
    finally:
        os.close(fd)


def _write_index(index: np.ndarray, path: Path, meta: dict) -> None:
    schema = pa.schema([("concept", pa.int32()), ("image_id", pa.int32()),
                        ("row", pa.int64()), ("n_pixels", pa.int32())], metadata=meta)
    arrays = [pa.array(index[:, 0].astype(np.int32)), pa.array(index[:, 1].astype(np.int32)),
              pa.array(index[:, 2]), pa.array(index[:, 3].astype(np.int32))]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path, **PARQUET)


def _write_meta(path: Path, n: int, c: int, shape, index: np.ndarray) -> None:
    meta = {"N": n, "C": c, "sh": int(shape[0]), "sw": int(shape[1]),
            "row_bytes": row_bytes_for(shape), "bitorder": BITORDER,
            "n_rows": int((index[:, 2] >= 0).sum())}
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _write_concepts(concepts: pd.DataFrame, index: np.ndarray, path: Path, meta: dict) -> None:
    c = len(concepts)
    cid = index[:, 0]
    n_images = np.bincount(cid, minlength=c)
    n_pixels = np.zeros(c, dtype=np.int64)
    np.add.at(n_pixels, cid, index[:, 3])
    has_pixel_row = np.bincount(cid[index[:, 2] >= 0], minlength=c) > 0
    kind = np.where((n_images > 0) & ~has_pixel_row, "image", "pixel")
    table = pa.table({
        "concept": pa.array(concepts["concept"].to_numpy(np.int32)),
        "number": pa.array(concepts["number"].to_numpy(np.int32)),
        "name": pa.array(concepts["name"].tolist(), pa.string()),
        "category": pa.array(concepts["category"].tolist(), pa.string()),
        "n_images": pa.array(n_images.astype(np.int64)),
        "n_pixels": pa.array(n_pixels),
        "kind": pa.array(kind.tolist(), pa.string()),
    }).replace_schema_metadata(meta)
    pq.write_table(table, path, **PARQUET)


class PackedMasks:
    """Read side of `masks/`: per-concept masks from the memory-mapped bits.

    Opening reads index.parquet and meta.json only; `bits` is an np.memmap of shape
    (n_rows, row_bytes), so a concept's pixel rows are a zero-copy slice.
    """

    def __init__(self, masks_dir: str | Path):
        masks_dir = Path(masks_dir)
        meta_path, bits_path = masks_dir / "meta.json", masks_dir / "bits.u8"
        if not meta_path.is_file():
            raise DataError(f"packed masks metadata not found: {meta_path}")
        meta = json.loads(meta_path.read_text())
        self.n_images, self.n_concepts = meta["N"], meta["C"]
        self.shape = (meta["sh"], meta["sw"])
        self.row_bytes, self.bitorder = meta["row_bytes"], meta["bitorder"]
        self.bits = self._map_bits(bits_path, meta["n_rows"])
        idx = pq.read_table(masks_dir / "index.parquet")
        self.concept = idx["concept"].to_numpy()
        self.image_id = idx["image_id"].to_numpy()
        self.row = idx["row"].to_numpy()
        self.n_pixels = idx["n_pixels"].to_numpy()
        # CSR pointers: the index rows of concept c are ptr[c]:ptr[c+1].
        self.ptr = np.searchsorted(self.concept, np.arange(self.n_concepts + 1)).astype(np.int64)
        self._full_row = pack_masks(np.ones((1,) + self.shape, dtype=bool), self.row_bytes)[0]

    def _map_bits(self, path: Path, n_rows: int) -> np.ndarray:
        expected = n_rows * self.row_bytes
        if not path.is_file() or path.stat().st_size != expected:
            raise DataError(f"packed masks file {path} is missing or not {expected} bytes")
        if n_rows == 0:  # np.memmap cannot map an empty file
            return np.zeros((0, self.row_bytes), dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r", shape=(n_rows, self.row_bytes))

    def concept_images(self, c: int) -> np.ndarray:
        """Sorted image ids where concept c is present."""
        return self.image_id[self.ptr[c]:self.ptr[c + 1]]

    def concept_packed(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(image_ids, packed rows n x row_bytes); image-level pairs get an all-ones row."""
        lo, hi = self.ptr[c], self.ptr[c + 1]
        rows = self.row[lo:hi]
        pixel = rows >= 0
        if pixel.all():  # the common case: one contiguous zero-copy slice
            r0 = rows[0] if len(rows) else 0
            return self.image_id[lo:hi], self.bits[r0:r0 + len(rows)]
        packed = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        packed[~pixel] = self._full_row
        packed[pixel] = self.bits[rows[pixel]]
        return self.image_id[lo:hi], packed

    def concept_mask(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(image_ids, bool masks n x sh x sw) of concept c."""
        ids, packed = self.concept_packed(c)
        sh, sw = self.shape
        bits = np.unpackbits(packed, axis=1, count=sh * sw, bitorder=self.bitorder)
        return ids, bits.reshape(len(ids), sh, sw).view(bool)

    def dense(self, c: int, n_images: int | None = None) -> np.ndarray:
        """Bool N x sh x sw mask of concept c over all images (N x H x W bytes: small sets only)."""
        n = self.n_images if n_images is None else n_images
        out = np.zeros((n,) + self.shape, dtype=bool)
        ids, masks = self.concept_mask(c)
        out[ids] = masks
        return out
