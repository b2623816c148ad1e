"""Readers for classification datasets (ImageFolder trees, path/label CSVs) and the
`open_dataset` dispatcher every pipeline step uses to get an `ImageTable`.

No torchvision: plain sorted `os.scandir`, so the image order (and so every image id)
is the same on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from nexplain.data.broden import open_broden, read_csv_strings
from nexplain.data.images import ImageTable
from nexplain.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")   # the order images of a split tree are listed in
KINDS = ("broden", "imagefolder", "csv")


def _subdirs(path: Path) -> list[Path]:
    with os.scandir(path) as it:
        return sorted((Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")),
                      key=lambda p: p.name)


def _images_under(path: Path) -> list[Path]:
    """Image files anywhere under `path`, in sorted walk order (as ImageFolder)."""
    out = []
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            out += _images_under(Path(e.path))
        elif e.name.lower().endswith(IMAGE_EXTENSIONS):
            out.append(Path(e.path))
    return out


def open_imagefolder(root: str | Path) -> ImageTable:
    """`root/<class>/<image>`, or `root/<split>/<class>/<image>` when every top-level
    folder is one of train/val/test. Classes are sorted names (union over splits)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"ImageFolder root not found: {root}")
    top = _subdirs(root)
    if not top:
        raise DataError(f"ImageFolder root {root} has no class folders")
    names = {d.name for d in top}
    if names <= set(SPLITS):
        parts = [(s, root / s) for s in SPLITS if s in names]
    else:
        parts = [("", root)]
    classes = sorted({d.name for _, base in parts for d in _subdirs(base)})
    position = {c: i for i, c in enumerate(classes)}
    paths, labels, splits = [], [], []
    for split, base in parts:
        for d in _subdirs(base):
            files = _images_under(d)
            paths += files
            labels += [position[d.name]] * len(files)
            splits += [split] * len(files)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return ImageTable(root=root, paths=paths, splits=np.asarray(splits, dtype=str),
                      labels=np.asarray(labels, dtype=np.int64), class_names=classes,
                      meta={"kind": "imagefolder"})


def open_csv(path: str | Path) -> ImageTable:
    """CSV with columns `path,label` (+ optional `split`); relative paths are relative to
    the CSV's folder. Integer labels are kept as they are (class_names None; a negative one
    means no class, as for Broden); any other labels become indices into their sorted names."""
    path = Path(path).resolve()
    df = read_csv_strings(path, required=("path", "label"))
    if df.empty:
        raise DataError(f"{path} lists no images")
    paths = [_resolve(path.parent, p.strip()) for p in df["path"]]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"image file not found: {absent[0]} "
                        f"({len(absent)} of {len(paths)} listed in {path} are missing)")
    labels, class_names = _encode_labels(df["label"].str.strip(), path)
    splits = df["split"].str.strip() if "split" in df.columns else pd.Series([""] * len(df))
    return ImageTable(root=path.parent, paths=paths, splits=splits.to_numpy(dtype=str),
                      labels=labels, class_names=class_names,
                      meta={"kind": "csv", "csv": str(path), "labels_file": str(path)})


def _resolve(base: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else base / q


def _encode_labels(values: pd.Series, path: Path):
    if (values == "").any():
        raise DataError(f"{path}: row {int((values == '').to_numpy().argmax()) + 2} has an empty label")
    if values.str.fullmatch(r"-?\d+").all():
        return values.astype(np.int64).to_numpy(), None
    names = sorted(set(values))
    position = {n: i for i, n in enumerate(names)}
    return np.asarray([position[v] for v in values], dtype=np.int64), names


def open_dataset(kind: str, root: str | Path) -> ImageTable:
    """The ImageTable of a dataset of the given reader kind."""
    if kind == "broden":
        return open_broden(root).table
    if kind == "imagefolder":
        return open_imagefolder(root)
    if kind == "csv":
        return open_csv(root)
    raise ConfigError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(KINDS)}")
