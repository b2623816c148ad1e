"""Reader for the Broden on-disk format (NetDissect), real downloads and our world alike.

A root holds `index.csv`, `label.csv`, `category.csv`, `c_<category>.csv` and an
`images/` folder (docs/methods.md). Opening reads only the CSVs (63k rows for
real Broden); masks are decoded one image at a time by `segmentation` and
`concept_masks`, so memory never grows with the number of images.

World extension: if `classes.csv` (`number,name,rule`) and `image_class.csv`
(`image,class`) exist, the image table carries class labels; `class` may be a class
number or a class name, and images without a row get label -1: no class, so training
and evaluation leave them out (`nexplain.models.train`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from nexplain.data.images import ImageTable, load_image
from nexplain.errors import DataError, first_line

# Entries of an index cell that are plain numbers are image-level labels.
_DIGITS = re.compile(r"^\d+$")
_CATEGORY_COUNT = re.compile(r"^([^(]+)\((\d+)\)$")

# Lookup-table codes for label numbers that map to no concept.
_UNUSABLE = -1   # listed in label.csv but in no known category: ignored
_UNKNOWN = -2    # not in label.csv at all: the data is inconsistent

# PIL modes a mask PNG may decode to; any other (CMYK, F, a JPEG's YCbCr...) has no label rule.
_PALETTE_MODES = {"P", "PA"}
_GREY_ALPHA = {"LA"}
_MASK_MODES = {"RGB", "RGBA", "1", "L", "I", "I;16", "I;16B", "I;16L"} | _PALETTE_MODES | _GREY_ALPHA


@dataclass(frozen=True)
class ImageMasks:
    """The concepts present in one image, as `concept_masks` returns them.

    `concepts` are sorted dense concept ids; `masks[i]` is the bool (sh, sw) mask of
    `concepts[i]`; `image_level[i]` says it came from an image-level label (then the
    mask is all True).
    """

    concepts: np.ndarray     # int32 (k,)
    masks: np.ndarray        # bool (k, sh, sw)
    image_level: np.ndarray  # bool (k,)


def read_csv_strings(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV with every cell a string: no float "12.0", no NaN, no "nan"."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except Exception as e:  # pandas raises several types for malformed files
        raise DataError(f"cannot parse CSV {path}: {e}") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(df.columns)}")
    return df


def parse_label_categories(field: str, path: Path, number: int) -> dict[str, int]:
    """`material(36);object(3)` -> {"material": 36, "object": 3}, in file order."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in field.split(";"))):
        m = _CATEGORY_COUNT.match(part)
        if not m:
            raise DataError(f"{path}: label {number} has malformed category entry {part!r}")
        out[m.group(1).strip()] = out.get(m.group(1).strip(), 0) + int(m.group(2))
    return out


def primary_category(counts: dict[str, int], categories: list[str]) -> str | None:
    """The known category with the highest count; ties go to the first listed (as NetDissect)."""
    known = [(n, c) for c, n in counts.items() if c in categories]
    if not known:
        return None
    best = max(n for n, _ in known)
    return next(c for n, c in known if n == best)


def decode_label_png(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Broden mask PNG to an int32 (sh, sw) label array, label = R + 256*G.

    Palette PNGs are decoded to their colours; single-channel PNGs (1, L, I, I;16) carry
    the label directly; alpha is ignored. Any other mode is refused, as is a wrong size.
    """
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in _PALETTE_MODES:  # palette indices mean nothing: use the colours
                im = im.convert("RGB")
            arr = np.asarray(im) if mode in _MASK_MODES else None
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"cannot decode mask {path}: {first_line(e)}") from None
    if arr is None:
        raise DataError(f"mask {path} has image mode {mode}; a mask must be RGB or RGBA "
                        f"(label = R + 256*G), palette, or single-channel (1, L, I, I;16)")
    if mode in _GREY_ALPHA:
        arr = arr[..., 0]
    if arr.ndim == 3:
        labels = arr[..., 0].astype(np.int32) + 256 * arr[..., 1].astype(np.int32)
    else:
        labels = arr.astype(np.int32)
    if labels.shape != tuple(shape):
        raise DataError(f"mask {path} is {labels.shape[0]}x{labels.shape[1]} (h x w) "
                        f"but index.csv says sh x sw = {shape[0]}x{shape[1]}")
    return labels


class BrodenDataset:
    """An opened Broden-format root. Build with `open_broden(root)`."""

    def __init__(self, root: Path, index: pd.DataFrame, categories: list[str],
                 labels: pd.DataFrame, concepts: pd.DataFrame, mask_shape: tuple[int, int],
                 table: ImageTable):
        self.root = root
        self.index = index            # index.csv, all cells strings
        self.categories = categories  # category names, category.csv order
        self.labels = labels          # label.csv rows (number > 0), strings but `number`
        self.concepts = concepts      # concept, number, name, category
        self.mask_shape = mask_shape
        self.table = table
        # Per-category cell lists: faster per-image access than DataFrame.iloc.
        self._cells = {c: (index[c].tolist() if c in index.columns else None) for c in categories}
        self._lut = self._label_lookup()

    def __len__(self) -> int:
        return len(self.table)

    def _label_lookup(self) -> np.ndarray:
        """Array mapping a label number to its concept id, or _UNUSABLE / _UNKNOWN."""
        size = int(self.labels["number"].max()) + 1 if len(self.labels) else 1
        lut = np.full(size, _UNKNOWN, dtype=np.int32)
        lut[self.labels["number"].to_numpy()] = _UNUSABLE
        lut[0] = _UNUSABLE  # 0 = unlabelled
        lut[self.concepts["number"].to_numpy()] = self.concepts["concept"].to_numpy()
        return lut

    def _concept_of(self, number: int) -> int:
        return int(self._lut[number]) if number < len(self._lut) else _UNKNOWN

    def image(self, image_id: int) -> Image.Image:
        return load_image(self.table.paths[image_id])

    def _entries(self, image_id: int, category: str) -> list[str]:
        cells = self._cells[category]
        if cells is None:
            return []
        return [e.strip() for e in cells[image_id].split(";") if e.strip()]

    def segmentation(self, image_id: int) -> dict[str, list]:
        """Raw labels per category: an int label number per image-level entry, an int32
        (sh, sw) label array per PNG. Categories with an empty cell are left out."""
        out: dict[str, list] = {}
        for cat in self.categories:
            items = [int(e) if _DIGITS.match(e) else self._read_png(e)[0]
                     for e in self._entries(image_id, cat)]
            if items:
                out[cat] = items
        return out

    def _read_png(self, entry: str) -> tuple[np.ndarray, np.ndarray]:
        """Label array of one mask PNG and its distinct nonzero label numbers, checked
        against label.csv."""
        path = self.root / "images" / entry
        labels = decode_label_png(path, self.mask_shape)
        if labels.min(initial=0) < 0:
            raise DataError(f"mask {path} holds negative label numbers")
        if labels.max(initial=0) >= len(self._lut):
            bad = np.unique(labels[labels >= len(self._lut)]).tolist()
        else:
            # bincount beats np.unique on small label images.
            numbers = np.flatnonzero(np.bincount(labels.ravel())[1:]) + 1
            bad = [int(n) for n in numbers if self._lut[n] == _UNKNOWN]
        if bad:
            raise DataError(f"mask {path} holds label number(s) {bad[:10]} not in "
                            f"{self.root / 'label.csv'}")
        return labels, numbers

    def concept_masks(self, image_id: int) -> ImageMasks:
        """The bool mask of every concept present in one image.

        PNG channels of all categories are OR-ed per concept (a pixel may carry
        several labels, e.g. overlapping parts); an image-level label covers the
        whole mask and wins over pixel labels of the same concept.
        """
        sh, sw = self.mask_shape
        pixel: dict[int, np.ndarray] = {}
        whole: set[int] = set()
        for cat in self.categories:
            for entry in self._entries(image_id, cat):
                if _DIGITS.match(entry):
                    whole.update(self._image_level_concepts(int(entry), image_id))
                    continue
                labels, numbers = self._read_png(entry)
                for n in numbers:
                    c = int(self._lut[n])
                    if c >= 0:
                        m = labels == n
                        pixel[c] = pixel[c] | m if c in pixel else m
        ids = sorted(set(pixel) | whole)
        masks = np.ones((len(ids), sh, sw), dtype=bool)
        for i, c in enumerate(ids):
            if c not in whole:
                masks[i] = pixel[c]
        return ImageMasks(np.asarray(ids, dtype=np.int32), masks,
                          np.asarray([c in whole for c in ids], dtype=bool))

    def _image_level_concepts(self, number: int, image_id: int) -> list[int]:
        c = self._concept_of(number)
        if c == _UNKNOWN:
            raise DataError(f"{self.root / 'index.csv'}: image {self.index['image'].iat[image_id]} "
                            f"has image-level label {number} not in {self.root / 'label.csv'}")
        return [c] if c >= 0 else []

    def category_labels(self, category: str) -> pd.DataFrame:
        """`c_<category>.csv`: code, number, name, frequency, coverage (code/number as int)."""
        path = self.root / f"c_{category}.csv"
        df = read_csv_strings(path, required=("code", "number", "name"))
        try:
            return df.assign(code=df["code"].astype(int), number=df["number"].astype(int))
        except ValueError as e:
            raise DataError(f"{path}: non-integer code or number: {e}") from None


def open_broden(root: str | Path, check_images: bool = True) -> BrodenDataset:
    """Open a Broden-format root; only the CSVs are read (and image files stat-ed)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"Broden root not found: {root}")
    index = read_csv_strings(root / "index.csv", required=("image", "sh", "sw"))
    if index.empty:
        raise DataError(f"{root / 'index.csv'} lists no images")
    categories = _read_categories(root, index)
    labels = _read_labels(root / "label.csv")
    concepts = _usable_concepts(labels, categories, root / "label.csv")
    mask_shape = _mask_shape(index, root / "index.csv")
    table = _image_table(root, index, mask_shape, check_images)
    return BrodenDataset(root, index, categories, labels, concepts, mask_shape, table)


def _read_categories(root: Path, index: pd.DataFrame) -> list[str]:
    """Category names from category.csv; without it, the index columns after `sw`."""
    path = root / "category.csv"
    if path.is_file():
        names = [n.strip() for n in read_csv_strings(path, required=("name",))["name"]]
        return [n for n in names if n]
    fixed = {"image", "split", "ih", "iw", "sh", "sw"}
    return [c for c in index.columns if c not in fixed]


def _read_labels(path: Path) -> pd.DataFrame:
    df = read_csv_strings(path, required=("number", "name", "category"))
    # The row for "unlabelled" (number 0 or "-") is optional in real downloads.
    df = df[~df["number"].str.strip().isin(["", "-", "0"])]
    bad = df[~df["number"].str.strip().str.fullmatch(r"\d+")]
    if len(bad):
        raise DataError(f"{path}: non-integer label number {bad['number'].iat[0]!r}")
    df = df.assign(number=df["number"].astype(np.int64), name=df["name"].str.strip())
    dup = df["number"][df["number"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: label number {int(dup.iat[0])} is listed twice")
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def _usable_concepts(labels: pd.DataFrame, categories: list[str], path: Path) -> pd.DataFrame:
    """One row per label with a known primary category; dense ids by label number."""
    rows = []
    for number, name, field in zip(labels["number"], labels["name"], labels["category"]):
        cat = primary_category(parse_label_categories(field, path, number), categories)
        if cat is not None and name != "-":
            rows.append((len(rows), int(number), name, cat))
    return pd.DataFrame(rows, columns=["concept", "number", "name", "category"]).astype(
        {"concept": np.int32, "number": np.int32})


def _mask_shape(index: pd.DataFrame, path: Path) -> tuple[int, int]:
    try:
        shapes = set(zip(index["sh"].astype(int), index["sw"].astype(int)))
    except ValueError as e:
        raise DataError(f"{path}: non-integer sh/sw: {e}") from None
    if len(shapes) != 1:
        raise DataError(f"{path}: masks must share one size, found {sorted(shapes)[:5]}")
    return shapes.pop()


def _image_table(root: Path, index: pd.DataFrame, mask_shape, check_images: bool) -> ImageTable:
    images = index["image"].str.strip().tolist()
    paths = [root / "images" / p for p in images]
    if check_images:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"image file not found: {missing[0]} "
                            f"({len(missing)} of {len(paths)} images listed in index.csv are missing)")
    splits = (index["split"].str.strip() if "split" in index.columns
              else pd.Series([""] * len(index))).to_numpy(dtype=str)
    labels, class_names = _read_classes(root, images)
    meta = {"kind": "broden", "mask_shape": list(mask_shape)}
    if labels is not None:  # what a message about missing classes names
        meta["labels_file"] = str(root / "image_class.csv")
    return ImageTable(root=root, paths=paths, splits=splits, labels=labels, class_names=class_names,
                      meta=meta)


def _read_classes(root: Path, images: list[str]):
    """World extension: per-image class labels from classes.csv + image_class.csv."""
    cpath, ipath = root / "classes.csv", root / "image_class.csv"
    if not (cpath.is_file() and ipath.is_file()):
        return None, None
    classes = read_csv_strings(cpath, required=("number", "name"))
    try:
        classes = classes.assign(number=classes["number"].astype(int)).sort_values("number")
    except ValueError as e:
        raise DataError(f"{cpath}: non-integer class number: {e}") from None
    names = classes["name"].str.strip().tolist()
    position = {str(n): i for i, n in enumerate(classes["number"])}
    position.update({n: i for i, n in enumerate(names)})
    rows = read_csv_strings(ipath, required=("image", "class"))
    of_image = {}
    for image, cls in zip(rows["image"].str.strip(), rows["class"].str.strip()):
        if cls not in position:
            raise DataError(f"{ipath}: image {image} has class {cls!r} not in {cpath}")
        of_image[image] = position[cls]
    labels = np.asarray([of_image.get(im, -1) for im in images], dtype=np.int64)
    return labels, names
