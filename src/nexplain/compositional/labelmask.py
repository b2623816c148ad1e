"""Label masking of an explanation table (docs/methods.md), an option because it runs the model.

For each explained unit (and cluster range): a seeded sample of the images where the
formula's mask is non-empty, each kept on the mask and replaced by uniform noise in
pixel space elsewhere; the score is the mean cosine between the unit's clean and masked
responses restricted to the unit's active cells (b_n: in the row's range).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
import torchvision.transforms as T

from nexplain.activations.hooks import Trace
from nexplain.compositional import formulas, metrics
from nexplain.compositional.bitmaps import Range
from nexplain.compositional.masks import ConceptStore
from nexplain.compute import Compute
from nexplain.data.concepts import BITORDER
from nexplain.data.images import ImageTable, load_image
from nexplain.errors import ModelError
from nexplain.models.load import LoadedModel

CACHED_IMAGES = 1024  # decoded input images kept (~150 KB each at 112 px)
SCHEMA = pa.schema([("unit", pa.int32()), ("cluster", pa.int16()), ("label_masking", pa.float64()),
                    ("n_images", pa.int32())])


def _pixels_and_normalize(loaded: LoadedModel):
    """Split the model's transform into (image -> [0, 1] tensor, normalisation): noise lives in pixel space."""
    steps = list(getattr(loaded.transform, "transforms", [loaded.transform]))
    norm = [s for s in steps if isinstance(s, T.Normalize)]
    pixels = T.Compose([s for s in steps if not isinstance(s, T.Normalize)])
    return pixels, (norm[0] if norm else (lambda x: x))


def unit_fn(loaded: LoadedModel, layer: str, unit: int, normalize, compute: Compute | None = None):
    """(B, C, H, W) pixel array -> the unit's (B, h, w) maps; the forward pass stops at the layer
    and runs on `compute`'s device (the model must already be there)."""
    compute = compute or Compute()

    @torch.inference_mode()
    def fn(x):
        with Trace(loaded.module, layer, stop=True) as t, compute.autocast():
            loaded.module(normalize(compute.to(torch.from_numpy(x))))
        out = t.output
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise ModelError(f"label masking needs a convolutional layer with (B, C, h, w) output; "
                             f"{layer} gives {type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
        return out[:, unit].float().cpu().numpy()
    return fn


def _in_range(row, clustered: bool, strict: bool) -> Range:
    """b_n: the row's range at feature resolution, with the bounds `nexplain.compositional.bitmaps` built it with."""
    lo, hi = row["lo"], row["hi"]
    if not clustered:
        return Range(lo, np.inf, False, False, 0)  # top-quantile rows: lo is the threshold
    if strict:
        return Range(lo, hi, False, False, 0)
    return Range(lo, hi, row["cluster"] == 0 and lo < 0, True, 0)  # signed units: the lowest range holds the minimum


def label_masking_table(loaded: LoadedModel, table: ImageTable, layer: str, rows: list[dict],
                        store: ConceptStore, names, *, clustered: bool, strict: bool = False,
                        n_images: int = 16, seed: int = 0, compute: Compute | None = None) -> pa.Table:
    """One row per explained (unit, cluster) of `rows` (an explanation table's records), the model
    run on `compute`'s device (default: the CPU)."""
    compute = compute or Compute()
    loaded.module.to(compute.device)
    pixels, normalize = _pixels_and_normalize(loaded)
    cache: dict[int, np.ndarray] = {}

    def image(i):
        if i not in cache:
            if len(cache) >= CACHED_IMAGES:  # bounded: explanations revisit the same images
                cache.clear()
            cache[i] = pixels(load_image(table.paths[i])).numpy()
        return cache[i]

    out = []
    for row in rows:
        if row["status"] != "ok":
            continue
        L = formulas.evaluate(formulas.parse(row["formula"], names), store)
        rng = np.random.default_rng([seed, row["unit"], row["cluster"] + 1])
        pick = np.arange(len(L.ids))
        if len(pick) > n_images:
            pick = np.sort(rng.choice(pick, n_images, replace=False))
        if not len(pick):
            continue
        h, w = store.shape
        dense = np.unpackbits(L.rows[pick], axis=1, count=h * w, bitorder=BITORDER).reshape(-1, h, w).view(bool)
        x = np.stack([image(int(i)) for i in L.ids[pick]])
        in_range = _in_range(row, clustered, strict).contains
        r = metrics.label_masking(unit_fn(loaded, layer, row["unit"], normalize, compute), x, dense, in_range, rng,
                                  batch_size=compute.batch_size or 32)
        out.append({"unit": row["unit"], "cluster": row["cluster"], "label_masking": r["label_masking"],
                    "n_images": r["n_images"]})
    return pa.Table.from_pylist(out, schema=SCHEMA)
