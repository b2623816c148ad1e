"""Unit selections from the config: `all`, a list of ids, or "a-b" ranges, and shards."""

from __future__ import annotations

import numpy as np

from nexplain.errors import ConfigError


def select_units(spec, n_units: int, shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """`all`, a list of ids, or "a-b" ranges ("0-63,100"); then every n-th for shard i/n."""
    if spec in (None, "all"):
        units = np.arange(n_units)
    else:
        parts = spec if isinstance(spec, list) else str(spec).split(",")
        ids = []
        for p in parts:
            lo, _, hi = str(p).strip().partition("-")
            ids += range(int(lo), int(hi or lo) + 1)
        units = np.unique(ids)
        if len(units) and (units[0] < 0 or units[-1] >= n_units):
            raise ConfigError(f"units {spec!r}: the layer has units 0..{n_units - 1}")
    i, n = shard
    if not 0 <= i < n:
        raise ConfigError(f"shard {i}/{n}: expected 0 <= i < n")
    return units[i::n]  # strided: neighbouring units cost alike, so shards balance
