"""Extract one layer's activations on one dataset into two Parquet files.

Both are image-major, written batch by batch as the forward pass runs, with one column
per unit (`u0000`, ...):
- summary: `image_id` + one float32 per unit, the unit's spatial mean (ViT: CLS token on
  the tower's last block, token mean elsewhere).
- maps: `image_id` + each unit's h x w map as one fixed-size binary value (float32
  little-endian, row-major), uncompressed, so one unit is one column: a reader of one
  unit reads only that column's chunks.

Row groups hold a fixed number of images (from `max_row_group_bytes`, not from the
batch size), so the same images give the same bytes whatever the batching. A full row
group is written on a second thread while the forward pass goes on.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from nexplain.activations.hooks import Trace, get_layer
from nexplain.activations.read import MAP_ENCODING, MAPS_LAYOUT, META_KEY, SUMMARY_LAYOUT, unit_columns
from nexplain.compute import Compute
from nexplain.data.images import ImageDataset, ImageTable
from nexplain.errors import ConfigError, DataError, ModelError
from nexplain.io import atomic_path

REDUCES = ("auto", "mean", "cls", "max")
# zstd level 1 compresses float summaries about as well as the default level 3 (ratio ~1.6
# vs ~1.7) at twice the speed; big write batches halve the per-page overhead.
_SUMMARY_PARQUET = dict(compression="zstd", compression_level=1, use_dictionary=False,
                        write_batch_size=1 << 18)
# Maps are most of the bytes: stored as is, a write is one copy (zstd costs ~4x that).
_MAPS_PARQUET = dict(compression="none", use_dictionary=False, write_batch_size=1 << 18)


def extract_activations(model, table: ImageTable, layer: str, summary_path, maps_path, *,
                        batch_size: int = 64, threads: int = 2, reduce: str = "auto",
                        max_row_group_bytes: int = 64 << 20, metadata: dict | None = None,
                        progress: bool = True, num_workers: int = 1,
                        compute: Compute | None = None) -> dict:
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
        max_row_group_bytes=max_row_group_bytes, metadata=metadata, progress=progress,
        channels_last=True, compute=compute)


def extract_batches(module: torch.nn.Module, layer: str, batches: Iterable, n_images: int,
                    summary_path, maps_path, *, reduce: str = "auto",
                    max_row_group_bytes: int = 64 << 20, metadata: dict | None = None,
                    progress: bool = False, channels_last: bool = False,
                    compute: Compute | None = None) -> dict:
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
    with atomic_path(summary_path) as summary_tmp, atomic_path(maps_path) as maps_tmp:
        writers = []
        try:
            done, last_id = 0, None
            for layout, ids, values, maps in _layer_outputs(
                    module, layer, batches, reduce, channels_last, progress, compute or Compute()):
                n = len(ids)
                if done + n > n_images:
                    raise DataError(f"got more than the {n_images} images announced")
                if np.any(np.diff(ids) <= 0) or (last_id is not None and ids[0] <= last_id):
                    raise DataError("image ids must come in strictly increasing order")
                if not writers:
                    meta = layout.meta(layer, n_images, reduce, metadata)
                    writers = [_summary_writer(summary_tmp, layout, meta, n_images, max_row_group_bytes),
                               _maps_writer(maps_tmp, layout, meta, n_images, max_row_group_bytes)]
                writers[0].write(ids, values.T[:, :, None])
                writers[1].write(ids, maps)
                del values, maps  # so the next forward reuses this batch's memory: new pages cost faults
                done, last_id = done + n, ids[-1]
            if done != n_images:
                raise DataError(f"extracted {done} images, expected {n_images}")
            for writer in writers:
                writer.close()
        finally:
            for writer in writers:
                writer.close(flush=False)  # no-op after a normal close
    return meta


def _layer_outputs(module, layer, batches, reduce, channels_last, progress, compute):
    """Yield (layout, image_ids, summary (B, U), maps (U, B, h*w)) per batch, as CPU tensors
    (maps a strided view on the CPU)."""
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
            maps = maps.transpose(0, 1)
            if maps.device.type != "cpu":
                maps = maps.contiguous()  # transposed on the device; one plain copy to the host
        yield layout, np.asarray(ids, dtype=np.int32), values.cpu(), maps.cpu()
        del trace, values, maps


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

def _schema(meta: dict, layout: str, value_type, nullable=True) -> pa.Schema:
    fields = [pa.field("image_id", pa.int32(), nullable)]
    fields += [pa.field(name, value_type, nullable) for name in unit_columns(meta["n_units"])]
    return pa.schema(fields, metadata={META_KEY: json.dumps({**meta, "layout": layout}, sort_keys=True).encode()})


def _rows_per_group(n_images, row_bytes, max_bytes) -> int:
    return max(1, min(n_images, max_bytes // row_bytes))


def _summary_writer(path, layout, meta, n_images, max_bytes):
    schema = _schema(meta, SUMMARY_LAYOUT, pa.float32())
    rows = _rows_per_group(n_images, 4 * (layout.n_units + 1), max_bytes)
    return _ColumnWriter(pq.ParquetWriter(path, schema, **_SUMMARY_PARQUET), schema, rows, 1)


def _maps_writer(path, layout, meta, n_images, max_bytes):
    hw = layout.height * layout.width
    # Required (non-null) fields skip Parquet's definition levels: the write takes 0.6x the time.
    schema = _schema({**meta, "map_encoding": MAP_ENCODING}, MAPS_LAYOUT, pa.binary(4 * hw), nullable=False)
    rows = _rows_per_group(n_images, 4 * (layout.n_units * hw + 1), max_bytes)
    # Statistics on image_id let readers skip row groups; on the maps they only cost time.
    writer = pq.ParquetWriter(path, schema, write_statistics=["image_id"],
                              sorting_columns=[pq.SortingColumn(0)], **_MAPS_PARQUET)
    return _ColumnWriter(writer, schema, rows, hw)


class _ColumnWriter:
    """Streams one value of `width` float32s per (image, unit) into row groups of `rows`
    images. The pending rows sit unit-major in a (units, rows, width) buffer, so each
    unit's column is written straight from it, without another copy. A full buffer is
    written on a second thread while a spare one fills: on a GPU the CPU is otherwise idle
    during the forward pass (on 2 busy CPU cores it gains little)."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, rows: int, width: int):
        self.writer, self.schema = writer, schema
        self.types = [f.type for f in schema][1:]
        self.spare = None
        self.ids = np.empty(rows, np.int32)
        self.buffer = np.empty((len(self.types), rows, width), np.float32)
        self.filled = 0
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="parquet")
        self.writing = None  # the row group on the thread

    def write(self, ids: np.ndarray, block: torch.Tensor) -> None:
        """A batch's ids (B,) and values (units, B, width), any strides."""
        start = 0
        while start < len(ids):
            take = min(len(ids) - start, len(self.ids) - self.filled)
            stop, at = start + take, self.filled
            self.ids[at:at + take] = ids[start:stop]
            _copy(torch.from_numpy(self.buffer[:, at:at + take]), block[:, start:stop])
            self.filled, start = at + take, stop
            if self.filled == len(self.ids):
                self._flush()

    def close(self, flush=True) -> None:
        if self.writer is None:
            return
        try:
            if flush:
                if self.filled:
                    self._flush()
                self._wait()
        finally:
            self.thread.shutdown()  # after an error: waits for a write in flight, ignores its outcome
            self.writer.close()
            self.writer = None

    def _flush(self) -> None:
        n = self.filled
        columns = [pa.array(self.ids[:n])]
        columns += [pa.Array.from_buffers(t, n, [None, pa.py_buffer(self.buffer[u, :n])])
                    for u, t in enumerate(self.types)]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._wait()  # the spare buffer is free again
        self.writing = self.thread.submit(self.writer.write_table, table, row_group_size=n)
        if self.spare is None:
            self.spare = (np.empty_like(self.ids), np.empty_like(self.buffer))
        (self.ids, self.buffer), self.spare = self.spare, (self.ids, self.buffer)
        self.filled = 0

    def _wait(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[:] = src, both (units, images, width). Out of channels_last (units innermost), an
    image at a time: torch copies that 2-D transpose in tiles, 2.5x faster than one 3-D copy."""
    if src.stride(0) < src.stride(2):
        for k in range(src.shape[1]):
            dst[:, k].copy_(src[:, k])
    else:
        dst.copy_(src)
