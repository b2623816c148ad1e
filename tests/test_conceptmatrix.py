"""Label-mode concept matrices: presence, classes, superclasses; the Parquet round trip."""

import numpy as np
import pandas as pd
import pytest

from nexplain.errors import DataError
from nexplain.linear.conceptmatrix import label_matrix, read_matrix, write_matrix


@pytest.fixture
def concepts(tmp_path):
    pd.DataFrame({"image_id": np.array([0, 1, 2], np.int32), "red": [True, False, True],
                  "circle": [False, False, True]}).to_parquet(tmp_path / "presence.parquet")
    return tmp_path


def test_presence_classes_and_superclasses(concepts, tmp_path):
    df = label_matrix(concepts, np.array([1, 0, 2]), ["circle", "dog", "cat"], {"animal": ["dog", "cat"]})
    assert list(df.columns) == ["image_id", "red", "circle", "class:circle", "dog", "cat", "animal"]
    assert df["red"].tolist() == [1, 0, 1] and df["class:circle"].tolist() == [0, 1, 0]
    assert df["animal"].tolist() == [1, 0, 1] and df["dog"].dtype == np.float32
    write_matrix(df, tmp_path / "P.parquet", {"source": "label"})
    ids, P, names, meta = read_matrix(tmp_path / "P.parquet")
    assert ids.tolist() == [0, 1, 2] and names == list(df.columns[1:]) and meta == {"source": "label"}
    assert np.array_equal(P, df.iloc[:, 1:].to_numpy(np.float32))


def test_bad_inputs(concepts, tmp_path):
    with pytest.raises(DataError, match="unknown classes"):
        label_matrix(concepts, np.array([0, 0, 0]), ["a"], {"b": ["zebra"]})
    with pytest.raises(DataError, match="2 class labels for 3 images"):
        label_matrix(concepts, np.array([0, 0]), ["a"])
    with pytest.raises(DataError, match="presence"):
        label_matrix(tmp_path / "nowhere")
