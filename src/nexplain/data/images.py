"""The image table every dataset kind reduces to, and safe image decoding.

Every reader (Broden, ImageFolder, CSV) returns an `ImageTable`: image ids are the
row positions 0..N-1 in the dataset's own order, which all artifacts key on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from nexplain.errors import DataError, first_line


@dataclass(frozen=True)
class ImageTable:
    root: Path
    paths: list[Path]                     # absolute image paths, index = image_id
    splits: np.ndarray                    # str per image: train | val | test | "" (unknown)
    labels: np.ndarray | None = None      # int class per image, or None
    class_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_ids(self) -> np.ndarray:
        return np.arange(len(self.paths), dtype=np.int32)

    def split_ids(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split).astype(np.int32)


def load_image(path: str | Path) -> Image.Image:
    """Decode an image as RGB, whatever its mode; a missing or corrupt file raises a one-line
    DataError naming it (one line: in a DataLoader worker it becomes the job's log line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {path}: {first_line(e)}") from None


class ImageDataset:
    """A torch-style dataset over an ImageTable: (tensor, image_id)."""

    def __init__(self, table: ImageTable, transform, ids=None):
        self.table = table
        self.transform = transform
        self.ids = table.image_ids if ids is None else np.asarray(ids, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = int(self.ids[i])
        return self.transform(load_image(self.table.paths[image_id])), image_id
