"""Image figures of the score report: per unit, the images each activation range holds.

- `ranges_figure`: one row per Clustered CoEx range: its bounds, formula and IoU, and the
  images with the most feature cells in that range;
- `top_figure`: the same for the NetDissect / CoEx region (above the unit's quantile threshold).

Each thumbnail dims the pixels whose (bilinearly upsampled) activation lies outside the range,
so the highlighted part is what the range's formula is scored on.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from nexplain.compositional.bitmaps import upsample
from nexplain.data.images import load_image
from nexplain.errors import DataError
from nexplain.report.report_figures import _plt, _save

DIM = 0.3  # brightness of pixels outside the range


def in_range(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Cells in (lo, hi]: the tile ranges' convention, and above the threshold for NetDissect."""
    return (a > lo) & (a <= hi)


def top_images(image_ids: np.ndarray, maps: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """Up to `n` image ids with the most cells in (lo, hi], ties by mean in-range activation,
    then by id; images with no cell in range are left out."""
    inside = in_range(maps, lo, hi).reshape(len(maps), -1)
    count = inside.sum(axis=1)
    mean = np.where(inside, maps.reshape(len(maps), -1), 0.0).sum(axis=1) / np.maximum(count, 1)
    order = np.lexsort((image_ids, -mean, -count))  # last key sorts first
    return np.asarray(image_ids)[order[count[order] > 0][:n]]


def _thumbnail(path, unit_map: np.ndarray, lo: float, hi: float) -> np.ndarray:
    img = load_image(path)
    up = upsample(unit_map[None], (img.height, img.width))[0]  # as the metrics upsample
    rgb = np.asarray(img, np.float32) / 255.0
    return np.where(in_range(up, lo, hi)[..., None], rgb, rgb * DIM)


def _figure(path, title: str, rows: list[dict], image_ids, maps, paths, per_row: int) -> None:
    """rows: {"label", "lo", "hi"}; one figure row each, text left, thumbnails right."""
    plt = _plt()
    pos = {int(i): k for k, i in enumerate(image_ids)}
    fig, axes = plt.subplots(len(rows), per_row + 1, figsize=(2.8 + 1.25 * per_row, 0.4 + 1.35 * len(rows)),
                             squeeze=False, gridspec_kw={"width_ratios": [2.2] + [1] * per_row})
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].text(0, 0.5, row["label"], fontsize=7.5, va="center", family="monospace")
        if not np.isfinite(row["lo"]):
            continue
        chosen = top_images(image_ids, maps, row["lo"], row["hi"], per_row)
        for t, i in enumerate(chosen):
            if int(i) >= len(paths):
                raise DataError(f"image id {int(i)} is past the dataset's {len(paths)} images: "
                                "were the activations extracted on another dataset?")
            axes[r, t + 1].imshow(_thumbnail(paths[int(i)], maps[pos[int(i)]], row["lo"], row["hi"]))
            axes[r, t + 1].set_title(f"#{int(i)}", fontsize=6, pad=1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _wrap(text, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text if isinstance(text, str) else "", width)) or "(none)"


def _iou(x) -> str:
    """An empty or unexplained range has no IoU: a dash, as on the unit pages, not "nan"."""
    return f"{x:.3f}" if np.isfinite(x) else "\u2013"


def ranges_figure(path, clustered: pd.DataFrame, unit: int, image_ids, maps, paths, per_row: int = 6) -> None:
    """One unit's Clustered CoEx ranges (rows of the clustered table), lowest first."""
    missing = [c for c in ("unit", "cluster", "status", "lo", "hi", "n_cells", "formula", "iou")
               if c not in clustered.columns]
    if missing:
        raise DataError(f"the Clustered CoEx table has no columns {missing}")
    part = clustered[clustered["unit"] == unit].sort_values("cluster")
    if part.empty:
        raise DataError(f"unit {unit} is not in the Clustered CoEx table")
    rows = [{"label": f"range {int(r.cluster)}: ({r.lo:.3g}, {r.hi:.3g}]\n{_wrap(r.formula)}\n"
                      f"IoU {_iou(r.iou)}, {int(r.n_cells)} cells" + ("" if r.status == "ok" else f"\n[{r.status}]"),
             "lo": float(r.lo), "hi": float(r.hi)} for r in part.itertuples()]
    _figure(path, f"unit {unit}: Clustered CoEx ranges and the images with most cells in each",
            rows, image_ids, maps, paths, per_row)


def top_figure(path, formulas: dict[str, pd.DataFrame], unit: int, image_ids, maps, paths,
               per_row: int = 6) -> None:
    """The region above the unit's threshold, with the NetDissect and CoEx formulas explaining it."""
    rows = {n: t.set_index("unit").loc[unit] for n, t in formulas.items() if n != "clustered"}
    if not rows:
        raise DataError("no NetDissect or CoEx table to draw a top-activation figure from")
    first = next(iter(rows.values()))
    label = "\n".join(f"{n}: {_wrap(r['formula'], 26)}\n  IoU {_iou(r['iou'])}" for n, r in rows.items())
    _figure(path, f"unit {unit}: top activations (> {first['lo']:.3g}, NetDissect / CoEx region)",
            [{"label": label, "lo": float(first["lo"]), "hi": float(first["hi"])}], image_ids, maps, paths, per_row)
