"""Train / val / test split of a probe dataset (docs/methods.md), drawn once from a seed.

The split is a table (`image_id`, `split`), so every method reads the same assignment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexplain.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def make_splits(image_ids, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> pd.DataFrame:
    """A seeded permutation cut at the cumulative fractions (rounded to whole images)."""
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ConfigError(f"split fractions must be 3 non-negative numbers summing to 1, got {list(fractions)}")
    ids = np.sort(np.asarray(image_ids, np.int64))
    if len(np.unique(ids)) != len(ids):
        raise DataError("image ids are not unique")
    order = np.random.default_rng(seed).permutation(len(ids))
    cuts = np.round(np.cumsum(fr)[:2] * len(ids)).astype(int)
    split = np.empty(len(ids), object)
    for name, part in zip(SPLITS, np.split(order, cuts)):
        split[part] = name
    return pd.DataFrame({"image_id": ids, "split": pd.Categorical(split, categories=SPLITS)})


def split_masks(table: pd.DataFrame, image_ids) -> dict[str, np.ndarray]:
    """Boolean masks over `image_ids` (in their order) for each split; every id must be in the table."""
    lookup = pd.Series(table["split"].astype(str).to_numpy(), index=table["image_id"].to_numpy())
    ids = np.asarray(image_ids, np.int64)
    missing = ~np.isin(ids, lookup.index.to_numpy())
    if missing.any():
        raise DataError(f"{int(missing.sum())} image ids (first {int(ids[missing][0])}) are not in the split table")
    names = lookup.loc[ids].to_numpy()
    return {s: names == s for s in SPLITS}
