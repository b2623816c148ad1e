"""Object crops for training the world's VLMs: where each thing is, and which concepts it holds.

A thing is one connected region of an anchor-category (`object`) concept in the pixel labels.
Its crop is a square of `size` pixels of the model's input around the region's centre; the
crop's concepts are those covering at least `min_share` of the crop's central half (so a
neighbour cut by the crop's edge is not named), plus the image-level concepts (the scene is
behind every crop). A thing that covers less than that itself (an occluded sliver) gets no crop. Coordinates are in the preprocessed image: open_clip's resize of the
shorter side to the input size, then a centre crop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from nexplain.data.concepts import column_names
from nexplain.errors import ConfigError, DataError
from nexplain.vlm.captions import ANCHOR

MIN_PIXELS = 2  # mask cells: a smaller region is a boundary artefact, as in the captions


def _to_input(ih: int, iw: int, input_size: int):
    """(scale, y offset, x offset) from image pixels to the preprocessed input's pixels."""
    scale = input_size / min(ih, iw)
    return scale, (ih * scale - input_size) / 2, (iw * scale - input_size) / 2


def object_crops(ds, ids, input_size: int, size: int, min_share: float = 0.15,
                 progress: bool = True) -> pd.DataFrame:
    """One row per thing of the images `ids` (rows of `ids` in order) of an opened
    Broden-format dataset `ds`: `row` (index into ids), `cy`, `cx` (crop centre in input
    pixels, kept so the crop lies inside the input) and `concepts` (presence column names)."""
    if size > input_size:
        raise DataError(f"crop size {size} is larger than the model input ({input_size} px)")
    names = np.array(column_names(ds.concepts))
    anchor = set(ds.concepts.loc[ds.concepts["category"] == ANCHOR, "concept"].astype(int))
    if not anchor:
        raise DataError(f"{ds.root}: no '{ANCHOR}' concepts, so no things to crop")
    sh, sw = ds.mask_shape
    rows = []
    for k, image_id in enumerate(tqdm(ids, desc="object crops", disable=not progress)):
        ih, iw = _image_shape(ds, int(image_id))
        scale, oy, ox = _to_input(ih, iw, input_size)
        my, mx = ih / sh * scale, iw / sw * scale  # mask cell -> input pixels
        m = ds.concept_masks(int(image_id))
        whole = [names[c] for c, lvl in zip(m.concepts, m.image_level) if lvl]
        pixel = [(c, mask) for c, mask, lvl in zip(m.concepts, m.masks, m.image_level) if not lvl]
        for c, mask in pixel:
            if c not in anchor:
                continue
            regions, n = ndimage.label(mask)
            for r in range(1, n + 1):
                ys, xs = np.nonzero(regions == r)
                if len(ys) < MIN_PIXELS:
                    continue
                half = size / 2
                cy = float(np.clip((ys.mean() + 0.5) * my - oy, half, input_size - half))
                cx = float(np.clip((xs.mean() + 0.5) * mx - ox, half, input_size - half))
                held = _crop_concepts(pixel, names, cy + oy, cx + ox, my, mx, size, min_share)
                if names[c] in held:  # else too little of the thing shows (an occluded sliver)
                    rows.append((k, cy, cx, held + whole))
    return pd.DataFrame(rows, columns=["row", "cy", "cx", "concepts"])


def training_crops(reader: str, root, ids, input_size: int, size: int) -> pd.DataFrame:
    """`object_crops` of a dataset given as in the config (reader kind, root): crops need pixel labels."""
    from nexplain.data.broden import open_broden

    if reader != "broden":
        raise ConfigError(f"VLM train.crops needs a Broden-format dataset with pixel labels; "
                          f"{root} is read as {reader!r}")
    return object_crops(open_broden(root), ids, input_size, size)


def _crop_concepts(pixel, names, cy, cx, my, mx, size, min_share) -> list[str]:
    """Pixel-level concepts covering at least min_share of the crop's central half."""
    q = size / 4
    y0, y1 = int(np.floor((cy - q) / my)), int(np.ceil((cy + q) / my))
    x0, x1 = int(np.floor((cx - q) / mx)), int(np.ceil((cx + q) / mx))
    found = []
    for c, mask in pixel:
        win = mask[max(y0, 0):y1, max(x0, 0):x1]
        if win.size and win.mean() >= min_share:
            found.append(str(names[c]))
    return found


def _image_shape(ds, image_id: int) -> tuple[int, int]:
    """(height, width) from index.csv's ih/iw, or from the image file where they are empty."""
    cells = [ds.index[c].iat[image_id] if c in ds.index.columns else "" for c in ("ih", "iw")]
    if all(str(v).strip().isdigit() for v in cells):
        return int(cells[0]), int(cells[1])
    im = ds.image(image_id)
    return im.height, im.width
