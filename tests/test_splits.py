"""The seeded train / val / test split."""

import numpy as np
import pytest

from nexplain.errors import ConfigError, DataError
from nexplain.splits import make_splits, split_masks


def test_fractions_seed_and_masks():
    t = make_splits(np.arange(3000)[::-1], seed=0)
    assert t["image_id"].tolist() == list(range(3000))
    assert t["split"].value_counts().to_dict() == {"train": 2100, "val": 300, "test": 600}
    assert t.equals(make_splits(np.arange(3000), seed=0))
    assert not t["split"].equals(make_splits(np.arange(3000), seed=1)["split"])
    m = split_masks(t, [5, 2, 9])
    assert sum(x.astype(int) for x in m.values()).tolist() == [1, 1, 1]
    with pytest.raises(DataError, match="not in the split table"):
        split_masks(t, [3000])


def test_bad_fractions():
    with pytest.raises(ConfigError, match="sum"):
        make_splits(range(10), fractions=(0.5, 0.5, 0.5))
