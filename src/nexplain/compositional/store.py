"""A dataset's concept masks opened for search, with the MMESH geometry saved once per dataset."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from nexplain.compositional.masks import ConceptStore
from nexplain.data.concepts import PackedMasks, concept_names
from nexplain.errors import DataError
from nexplain.io import write_npz


def open_store(concepts_dir, geometry=None) -> tuple[ConceptStore, list[str]]:
    """The concept masks of a dataset's concept tables, and unique concept names by id.

    `geometry`: a file from `save_geometry`; without it the boxes and rectangles MMESH
    needs are computed here (about a minute per million (concept, image) pairs).
    """
    pm = PackedMasks(os.path.join(concepts_dir, "masks"))
    store = ConceptStore.from_packed(pm, _load_geometry(geometry, len(pm.row), pm.n_concepts) if geometry else None)
    names = concept_names(concepts_dir)
    return store, names


def save_geometry(concepts_dir, path) -> None:
    """Per (concept, image) pair the bounding box and inscribed rectangle, (pairs, 4) int16
    each, and which concepts ever meet, (C, C) bool: an .npz with no timestamps in it."""
    box, rect, meets = ConceptStore.from_packed(PackedMasks(os.path.join(concepts_dir, "masks"))).geometry()
    write_npz(path, {"box": box, "rect": rect, "meets": meets})


def _load_geometry(path, n_pairs: int, n_concepts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:  # closing the file closes an .npz too
            z = np.load(fh)
            box, rect, meets = z["box"], z["rect"], z["meets"]
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a geometry file from save_geometry ({e!r}): rebuild it") from e
    if box.shape != (n_pairs, 4) or rect.shape != box.shape or meets.shape != (n_concepts, n_concepts):
        raise DataError(f"{path}: geometry of {box.shape[0]} pairs and {meets.shape[0]} concepts, but the "
                        f"masks have {n_pairs} and {n_concepts}: rebuild it")
    return box, rect, meets
