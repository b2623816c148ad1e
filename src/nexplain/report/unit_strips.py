"""NetDissect-Lite-style strips for every unit's page: the unit's top images, each with the
outline of the cells above the unit's top-quantile threshold.

Drawn with PIL, not matplotlib (a few milliseconds a unit), so every unit of a layer gets
one within the run's budget; JPEG keeps a page that embeds its strip small. The threshold
and the region are NetDissect's own (`bitmaps.quantile_threshold`, the bilinear `upsample`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from nexplain.compositional.bitmaps import quantile_threshold, upsample
from nexplain.data.images import load_image
from nexplain.errors import DataError
from nexplain.report.range_figures import in_range, top_images

OUTLINE = np.array([255, 221, 0], np.float32)  # yellow, visible on the world's colours
DIM = 0.55          # brightness outside the region
GAP = 4             # pixels between thumbnails


def outline(mask: np.ndarray) -> np.ndarray:
    """The region's border: cells in `mask` with a 4-neighbour outside it (or on the edge)."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def thumbnail(path, unit_map: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """(size, size, 3) float RGB: outside the region dimmed, its border drawn (2 px)."""
    img = np.asarray(load_image(path).resize((size, size), Image.BILINEAR), np.float32)
    region = in_range(upsample(unit_map[None].astype(np.float32), (size, size))[0], threshold, np.inf)
    edge = outline(region)
    edge |= np.roll(edge, 1, 0) & region | np.roll(edge, 1, 1) & region  # 2 px, kept inside
    out = np.where(region[..., None], img, img * DIM)
    out[edge] = OUTLINE
    return out


def top_strip(image_ids: np.ndarray, maps: np.ndarray, paths, *, q: float = 0.995,
              n: int = 6, size: int = 96) -> tuple[bytes | None, list[int], float]:
    """(JPEG bytes of the strip or None for a dead unit, the image ids shown, the threshold).
    `maps` (N, h, w): one unit's maps on `image_ids`."""
    if not maps.size or maps.min() == maps.max():
        return None, [], float("nan")
    threshold = quantile_threshold(maps, q)
    chosen = [int(i) for i in top_images(image_ids, maps, threshold, np.inf, n)]
    if not chosen:
        return None, [], threshold
    pos = {int(i): k for k, i in enumerate(image_ids)}
    strip = np.full((size, len(chosen) * (size + GAP) - GAP, 3), 255.0, np.float32)
    for k, i in enumerate(chosen):
        if i >= len(paths):
            raise DataError(f"image id {i} is past the dataset's {len(paths)} images: "
                            "were the activations extracted on another dataset?")
        strip[:, k * (size + GAP):k * (size + GAP) + size] = thumbnail(paths[i], maps[pos[i]], threshold, size)
    buffer = io.BytesIO()
    Image.fromarray(strip.round().astype(np.uint8)).save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue(), chosen, threshold
