"""Extract one layer's activations on one dataset into two Parquet files.

- summary: one row per image, `image_id` + one float32 column per unit (`u0000`, ...),
  the unit's spatial mean (ViT: CLS token on the tower's last block, token mean elsewhere).
- maps: one row per (unit, image), sorted by unit then image_id, with the unit's
  h x w map as one fixed-size binary value (float32 little-endian, row-major), stored
  uncompressed; a few units per row group, so one unit is read cheaply.

The forward pass is image-major but the maps file is unit-major. The transpose
goes through a (units, images, h*w) float32 spill: each batch writes its per-unit
blocks at their final offsets, then the Parquet is written row group by row group
from it. The spill is an array in memory up to `SPILL_IN_MEMORY` bytes (the write then
copies nothing) and a raw file on disk beyond, so memory stays bounded whatever the
number of images.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from nexplain.activations.hooks import Trace, get_layer
from nexplain.activations.read import META_KEY, unit_columns
from nexplain.compute import Compute
from nexplain.data.images import ImageDataset, ImageTable
from nexplain.errors import ConfigError, DataError, ModelError
from nexplain.io import atomic_path

REDUCES = ("auto", "mean", "cls", "max")
SUMMARY_LAYOUT = "image_major"   # one row per image, one column per unit
MAPS_LAYOUT = "unit_major"       # one row per (unit, image), sorted by unit then image_id
# zstd level 1 compresses float maps about as well as the default level 3 (ratio ~1.6
# vs ~1.7) at twice the speed; big write batches halve the per-page overhead.
_PARQUET = dict(compression="zstd", compression_level=1, use_dictionary=False,
                write_batch_size=1 << 18)
# The maps table is written after the last image, so its write is all overhead: a map as
# one fixed-size binary value, uncompressed, is copied as is (a float list would cost
# Parquet levels per float, and zstd ~4x the copy), at ~1.6x the bytes of zstd's.
_MAPS_PARQUET = {**_PARQUET, "compression": {"unit": "zstd", "image_id": "zstd", "map": "none"},
                 "compression_level": {"unit": 1, "image_id": 1}}
MAP_ENCODING = "float32 little-endian, row-major h x w"
SPILL_IN_MEMORY = 1 << 30  # bytes of maps kept in memory; a larger layer spills to disk


def extract_activations(model, table: ImageTable, layer: str, summary_path, maps_path, *,
                        batch_size: int = 64, threads: int = 2, reduce: str = "auto",
                        max_row_group_bytes: int = 64 << 20, units_per_row_group: int = 8,
                        metadata: dict | None = None, progress: bool = True,
                        num_workers: int = 1, compute: Compute | None = None) -> dict:
    """Run `model` (a LoadedModel) over every image of `table`, stopping at `layer`, on
    `compute`'s device (default: the CPU).

    Returns the metadata written into both files.
    """
    compute = compute or Compute()
    torch.set_num_threads(threads)
    # channels_last runs ResNets ~1.4x faster on CPU (oneDNN); it changes the module in place.
    model.module.to(compute.device, memory_format=torch.channels_last)
    dataset = ImageDataset(table, model.transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False,
        **compute.loader_options(num_workers if len(dataset) > batch_size else 0))
    return extract_batches(
        model.module, layer, loader, len(dataset), summary_path, maps_path, reduce=reduce,
        max_row_group_bytes=max_row_group_bytes, units_per_row_group=units_per_row_group,
        metadata=metadata, progress=progress, channels_last=True, compute=compute)


def extract_batches(module: torch.nn.Module, layer: str, batches: Iterable, n_images: int,
                    summary_path, maps_path, *, reduce: str = "auto",
                    max_row_group_bytes: int = 64 << 20, units_per_row_group: int = 8,
                    metadata: dict | None = None, progress: bool = False,
                    channels_last: bool = False, compute: Compute | None = None) -> dict:
    """The extraction core over ready-made `(images, image_ids)` batches, ids ascending.

    `channels_last` converts each image batch to that memory format (use it with a
    module converted the same way).
    """
    if reduce not in REDUCES:
        raise ConfigError(f"unknown reduce {reduce!r}; valid: {', '.join(REDUCES)}")
    get_layer(module, layer)  # fail on a bad name before any work
    if n_images < 1:
        raise DataError("no images to extract activations from")
    module.eval()
    maps_path = Path(maps_path)
    maps_path.parent.mkdir(parents=True, exist_ok=True)
    summary = spill = None
    try:
        with atomic_path(summary_path) as summary_tmp:
            ids = np.empty(n_images, dtype=np.int32)
            done = 0
            for layout, batch_ids, values, maps in _layer_outputs(
                    module, layer, batches, reduce, channels_last, progress, compute or Compute()):
                n = len(values)
                if done + n > n_images:
                    raise DataError(f"got more than the {n_images} images announced")
                ids[done:done + n] = batch_ids
                if summary is None:
                    meta = layout.meta(layer, n_images, reduce, metadata)
                    summary = _SummaryWriter(summary_tmp, layout.n_units, meta, max_row_group_bytes)
                    spill = _Spill(layout.n_units, n_images, layout.height * layout.width, maps_path)
                summary.write(ids[done:done + n], values)
                spill.put(maps, done)
                done += n
            if done != n_images:
                raise DataError(f"extracted {done} images, expected {n_images}")
            if np.any(np.diff(ids) <= 0):
                raise DataError("image ids must come in strictly increasing order")
            summary.close()
            with atomic_path(maps_path) as maps_tmp:
                _write_maps(maps_tmp, spill, ids, layout, meta, max_row_group_bytes, units_per_row_group)
        return meta
    finally:
        if summary is not None:
            summary.close(flush=False)  # no-op after a normal close
        if spill is not None:
            spill.close()


def _layer_outputs(module, layer, batches, reduce, channels_last, progress, compute):
    """Yield (layout, image_ids, summary (B, U) array, maps (B, U, h*w) CPU tensor) per batch."""
    layout = None
    for images, ids in tqdm(batches, desc=f"extract {layer}", disable=not progress):
        images = compute.to(images)
        if channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), compute.autocast():
            with Trace(module, layer, stop=True) as trace:
                module(images)
            if trace.output is None:
                raise ModelError(f"layer {layer!r} did not run during the forward pass")
            if layout is None:
                layout = _Layout.of(module, layer, trace.output, reduce)
            values, maps = layout.split(trace.output)
        yield layout, np.asarray(ids, dtype=np.int32), values.cpu().numpy(), maps.cpu()


class _Layout:
    """How one layer's output splits into per-unit summaries and spatial maps."""

    def __init__(self, kind, n_units, height, width, reduce, n_prefix=0, batch_first=True):
        self.kind, self.n_units, self.height, self.width = kind, n_units, height, width
        self.reduce, self.n_prefix, self.batch_first = reduce, n_prefix, batch_first

    @classmethod
    def of(cls, module, layer, output, reduce):
        if not isinstance(output, torch.Tensor):
            raise ModelError(f"layer {layer!r} outputs a {type(output).__name__}, not a tensor; "
                             "pick a layer whose output is one tensor")
        if output.ndim == 4:  # conv: (B, C, H, W)
            if reduce == "cls":
                raise ConfigError(f"reduce: cls needs a token layer; {layer!r} is convolutional")
            _, c, h, w = output.shape
            return cls("conv", c, h, w, "mean" if reduce == "auto" else reduce)
        if output.ndim == 3:  # transformer tokens: (B, T, D) or (T, B, D)
            batch_first = _batch_first(module, layer)
            tokens = output.shape[1] if batch_first else output.shape[0]
            grid = math.isqrt(tokens)
            if grid * grid != tokens:
                grid = math.isqrt(tokens - 1)
            n_prefix = tokens - grid * grid  # CLS (and any register tokens) come first
            if reduce == "auto":
                reduce = "cls" if _is_last_block(module, layer) else "mean"
            if reduce == "cls" and n_prefix == 0:
                raise ConfigError(f"reduce: cls, but layer {layer!r} has no CLS token")
            return cls("tokens", output.shape[2], grid, grid, reduce, n_prefix, batch_first)
        if output.ndim == 2:  # a vector per image: its own 1 x 1 map
            return cls("vector", output.shape[1], 1, 1, "mean" if reduce == "auto" else reduce)
        raise ModelError(f"layer {layer!r} outputs shape {tuple(output.shape)}; "
                         "expected (B,C,H,W), (B,T,D) or (B,D)")

    def split(self, out: torch.Tensor):
        """(summary (B, U), maps (B, U, h*w)) as float32 CPU tensors."""
        out = out.float()
        if self.kind == "conv":
            maps = out.flatten(2)
            values = maps.amax(2) if self.reduce == "max" else maps.mean(2)
        elif self.kind == "tokens":
            if not self.batch_first:
                out = out.transpose(0, 1)
            values = {"cls": lambda: out[:, 0], "mean": lambda: out.mean(1),
                      "max": lambda: out.amax(1)}[self.reduce]()
            maps = out[:, self.n_prefix:].transpose(1, 2)  # patch tokens, row-major grid
        else:
            values, maps = out, out[:, :, None]
        return values.contiguous(), maps

    def meta(self, layer, n_images, reduce, extra):
        return {**(extra or {}), "layer": layer, "n_images": int(n_images),
                "n_units": int(self.n_units), "map_height": int(self.height),
                "map_width": int(self.width), "dtype": "float32", "reduce": self.reduce,
                "reduce_requested": reduce}


def _batch_first(module, layer) -> bool:
    """open_clip transformers say whether tokens are (B, T, D); look up the path for it."""
    parts = layer.split(".")
    for i in range(len(parts), -1, -1):
        owner = module.get_submodule(".".join(parts[:i]))
        if hasattr(owner, "batch_first"):
            return bool(owner.batch_first)
    return True


def _is_last_block(module, layer) -> bool:
    """True when `layer` is the last child of its block container (e.g. resblocks.11 of 12)."""
    parent, _, name = layer.rpartition(".")
    container = module.get_submodule(parent)
    return isinstance(container, (torch.nn.ModuleList, torch.nn.Sequential)) \
        and list(container._modules)[-1] == name


# --- writing ------------------------------------------------------------------

def _schema_meta(meta: dict, layout: str) -> dict:
    return {META_KEY: json.dumps({**meta, "layout": layout}, sort_keys=True).encode()}


class _SummaryWriter:
    """Streams summary rows into row groups of a fixed row count (not batch-dependent)."""

    def __init__(self, path, n_units, meta, max_row_group_bytes):
        self.names = unit_columns(n_units)
        fields = [pa.field("image_id", pa.int32())] + [pa.field(n, pa.float32()) for n in self.names]
        self.schema = pa.schema(fields, metadata=_schema_meta(meta, SUMMARY_LAYOUT))
        self.writer = pq.ParquetWriter(path, self.schema, **_PARQUET)
        self.rows = max(1, max_row_group_bytes // (4 * (n_units + 1)))
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_pending = 0

    def write(self, ids, values):
        self.pending.append((ids.copy(), values))
        self.n_pending += len(ids)
        while self.n_pending >= self.rows:
            self._flush(self.rows)

    def close(self, flush=True):
        if self.writer is None:
            return
        if flush and self.n_pending:
            self._flush(self.n_pending)
        self.writer.close()
        self.writer = None

    def _flush(self, rows):
        ids = np.concatenate([i for i, _ in self.pending])
        values = np.concatenate([v for _, v in self.pending])
        columns = [pa.array(ids[:rows])] + [pa.array(values[:rows, k]) for k in range(values.shape[1])]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema), row_group_size=rows)
        self.pending = [(ids[rows:], values[rows:])] if rows < len(ids) else []
        self.n_pending = len(ids) - rows


class _Spill:
    """The maps of every image, unit-major: a (U, N, hw) float32 array in memory, or a raw
    file of that layout beside `near` (on disk, not on a RAM-backed /tmp) when larger than
    SPILL_IN_MEMORY."""

    def __init__(self, n_units: int, n_images: int, hw: int, near: Path):
        self.shape = (n_units, n_images, hw)
        self.array = self.fd = None
        if 4 * n_units * n_images * hw <= SPILL_IN_MEMORY:
            self.array = np.empty(self.shape, np.float32)
        else:
            self.fd, self.path = tempfile.mkstemp(prefix=f".{near.name}.spill.", suffix=".tmp", dir=near.parent)

    def put(self, maps: torch.Tensor, start: int) -> None:
        """A batch's (B, U, hw) maps, images start..start+B."""
        if self.array is not None:  # one strided copy straight into place
            torch.from_numpy(self.array[:, start:start + len(maps)]).copy_(maps.transpose(0, 1))
            return
        blocks = maps.transpose(0, 1).contiguous().numpy()  # (U, B, hw): one block per unit
        _, n, hw = self.shape
        for u in range(len(blocks)):
            os.pwrite(self.fd, blocks[u], (u * n + start) * hw * 4)

    def block(self, u0: int, u1: int, r0: int, r1: int):
        """Units u0..u1, images r0..r1 as one buffer: whole units, or rows of one unit."""
        if self.array is not None:
            return self.array[u0:u1, r0:r1]
        _, n, hw = self.shape
        offset = (u0 * n + r0) * hw if u1 - u0 == 1 else u0 * n * hw
        count = (u1 - u0) * (r1 - r0) * hw
        raw = os.pread(self.fd, count * 4, offset * 4)
        if len(raw) != count * 4:
            raise DataError(f"spill file {self.path} is short")
        return raw

    def close(self) -> None:
        self.array = None
        if self.fd is not None:
            os.close(self.fd)
            os.unlink(self.path)
            self.fd = None


def _row_groups(n_units, n_images, hw, max_bytes, units_per_group):
    """(unit_start, unit_stop, row_start, row_stop) per row group, each <= max_bytes."""
    row_bytes = hw * 4 + 8  # map + unit + image_id
    unit_bytes = n_images * row_bytes
    if unit_bytes <= max_bytes:
        k = max(1, min(units_per_group, max_bytes // unit_bytes))
        return [(u, min(u + k, n_units), 0, n_images) for u in range(0, n_units, k)]
    rows = max(1, max_bytes // row_bytes)  # one unit is too big: split it by images
    return [(u, u + 1, r, min(r + rows, n_images))
            for u in range(n_units) for r in range(0, n_images, rows)]


def _write_maps(path, spill: _Spill, ids, layout, meta, max_bytes, units_per_group):
    n, hw = len(ids), layout.height * layout.width
    map_type = pa.binary(hw * 4)
    schema = pa.schema([pa.field("unit", pa.int32()), pa.field("image_id", pa.int32()),
                        pa.field("map", map_type)],
                       metadata=_schema_meta({**meta, "map_encoding": MAP_ENCODING}, MAPS_LAYOUT))
    # Statistics on unit/image_id let readers skip row groups; on map they only cost time.
    with pq.ParquetWriter(path, schema, write_statistics=["unit", "image_id"],
                          sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
                          **_MAPS_PARQUET) as writer:
        for u0, u1, r0, r1 in _row_groups(layout.n_units, n, hw, max_bytes, units_per_group):
            rows = r1 - r0
            maps = pa.FixedSizeBinaryArray.from_buffers(map_type, (u1 - u0) * rows,
                                                        [None, pa.py_buffer(spill.block(u0, u1, r0, r1))])
            units = np.repeat(np.arange(u0, u1, dtype=np.int32), rows)
            image_ids = np.tile(ids[r0:r1], u1 - u0)
            table = pa.Table.from_arrays([pa.array(units), pa.array(image_ids), maps], schema=schema)
            writer.write_table(table, row_group_size=len(table))
