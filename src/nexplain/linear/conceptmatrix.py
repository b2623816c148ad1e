"""Concept activation matrices P (N x C, values in [0, 1]) for Linear Explanations and simulation.

A matrix is a Parquet table: `image_id` then one float32 column per concept, with a
`nexplain` metadata entry saying where it came from (source, and for VLM matrices the
model and the calibration). Label mode: image-level presence of every concept of a
Broden-format dataset, plus one-hot classes and superclasses where the dataset has them.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexplain import tables
from nexplain.errors import DataError


def label_matrix(concepts_dir, class_labels=None, class_names=None, superclasses=None) -> pd.DataFrame:
    """P from a dataset's `presence.parquet`, plus classes (`class_labels` (N,) ints, -1 = none)
    and superclasses (`superclasses`: {name: [class names]})."""
    path = os.path.join(concepts_dir, "presence.parquet")
    try:
        presence = pd.read_parquet(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read the concept presence table ({e})") from e
    P = presence.drop(columns="image_id").astype(np.float32)
    cols = {"image_id": presence["image_id"].astype(np.int64)} | {c: P[c] for c in P.columns}
    if class_labels is not None:
        labels = np.asarray(class_labels)
        if len(labels) != len(presence):
            raise DataError(f"{len(labels)} class labels for {len(presence)} images in {path}")
        labels = labels[presence["image_id"].to_numpy()]
        for k, name in enumerate(class_names):
            cols[_unique(name, cols)] = (labels == k).astype(np.float32)
        for name, members in (superclasses or {}).items():
            unknown = set(members) - set(class_names)
            if unknown:
                raise DataError(f"superclass {name!r} names unknown classes {sorted(unknown)}; "
                                f"classes are {list(class_names)}")
            idx = [class_names.index(m) for m in members]
            cols[_unique(name, cols)] = np.isin(labels, idx).astype(np.float32)
    return pd.DataFrame(cols)


def _unique(name: str, taken) -> str:
    """A class named like a concept becomes `class:<name>`."""
    return name if name not in taken else f"class:{name}"


def write_matrix(df: pd.DataFrame, path, meta: dict) -> None:
    tables.write_table(df, path, meta)


def read_matrix(path) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(image_ids (N,), P (N, C) float32, concept names, metadata)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read the concept matrix ({e})") from e
    if "image_id" not in table.column_names:
        raise DataError(f"{path}: no image_id column")
    names = [n for n in table.column_names if n != "image_id"]
    ids = table.column("image_id").to_numpy().astype(np.int64)
    P = np.column_stack([table.column(n).to_numpy() for n in names]).astype(np.float32) if names \
        else np.zeros((len(ids), 0), np.float32)
    return ids, P, names, tables.read_metadata(path)


def read_aligned(path, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(P, names): a concept matrix with its rows in the order of image `ids` (every id must be there)."""
    from nexplain.linear.linear import aligned

    m_ids, P, names, _ = read_matrix(path)
    return aligned(ids, m_ids, P, path), names
