"""Tiny datasets written in exactly Broden's on-disk format, for tests and benchmarks.

`write_broden_fixture(root)` writes 5 hand-designed images (16x16 JPG, 8x8 mask PNGs
with label = R + 256*G) and returns what a correct reader must find in them.
`write_synthetic_broden(root, n)` writes n random images at real Broden's mask size.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

INDEX_HEADER = ["image", "split", "ih", "iw", "sh", "sw",
                "color", "object", "part", "material", "scene", "texture"]
CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
SH = SW = 8
IH = IW = 16

# number, name, category field (as in label.csv), syns
LABELS = [
    (1, "red-c", "color(2)", ""),
    (2, "blue-c", "color(2)", ""),
    (3, "car", "object(1)", "automobile;motorcar"),
    (4, "person", "object(2);part(1)", "human, body"),   # a comma forces CSV quoting
    (5, "wood", "material(2);object(3)", ""),             # primary category: object
    (6, "head", "part(2)", ""),
    (7, "street", "scene(2)", ""),
    (8, "indoor", "scene(2)", ""),
    (9, "striped", "texture(3)", ""),
    (11, "glass", "material(1)", ""),                     # duplicate name ...
    (12, "glass", "object(1)", ""),                       # ... disambiguated as glass-12
    (13, "unused", "object(0)", ""),                      # listed, never present
    (14, "orphan", "", ""),                               # no category: not a concept
    (300, "wheel", "part(2)", ""),                        # > 255: G channel matters
]
# Dense concept ids follow label number; label 14 is dropped.
CONCEPT_NUMBERS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 300]
PRIMARY = {1: "color", 2: "color", 3: "object", 4: "object", 5: "object", 6: "part",
           7: "scene", 8: "scene", 9: "texture", 11: "material", 12: "object",
           13: "object", 300: "part"}

# Hand-computed pixel share per image (label number -> share); image-level = 1.0.
EXPECTED_SHARE = [
    {1: 0.5, 2: 0.5, 3: 0.5, 5: 16 / 64, 6: 12 / 64, 7: 1.0, 9: 1.0, 11: 8 / 64, 300: 9 / 64},
    {1: 63 / 64, 7: 1.0, 8: 1.0},
    {4: 8 / 64, 6: 1 / 64, 9: 1.0, 12: 8 / 64, 300: 4 / 64},
    {},
    {5: 1.0, 8: 1.0, 9: 1.0},
]
IMAGE_LEVEL_NUMBERS = {7, 8, 9}


@dataclass
class Fixture:
    root: Path
    images: list[str]                        # index.csv `image` column
    masks: list[dict[int, np.ndarray]]       # per image: label number -> bool (SH, SW) mask
    image_level: list[set[int]]              # per image: image-level label numbers
    files: dict[str, Path]                   # handy paths for corruption tests


def _blank() -> np.ndarray:
    return np.zeros((SH, SW), dtype=np.int32)


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Encode an int label array as Broden does: R = n % 256, G = n // 256."""
    rgb = np.zeros(labels.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)


def _write_jpg(path: Path, seed: int, size: tuple[int, int] = (IH, IW)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8), "RGB").save(path, quality=90)


def _fixture_pngs() -> list[dict[str, list[np.ndarray]]]:
    """Per image, per category, the label arrays of its PNGs (hand-designed)."""
    # Image 0: every category; two part PNGs that overlap; wood in object AND material.
    color0 = _blank(); color0[:4] = 1; color0[4:] = 2
    obj0 = _blank(); obj0[:, :4] = 3; obj0[:2, 4:] = 5
    part0a = _blank(); part0a[6:, :4] = 300
    part0b = _blank(); part0b[5:, 2:6] = 6; part0b[0, 0] = 300
    mat0 = _blank(); mat0[2:4, 4:] = 11; mat0[4:6, 4:] = 5
    # Image 1: colour only (one unlabelled pixel) plus two scene labels.
    color1 = np.ones((SH, SW), dtype=np.int32); color1[0, 0] = 0
    # Image 2: object with a label that is in no category (14, ignored), one part PNG.
    obj2 = _blank(); obj2[:, 0] = 4; obj2[:, 7] = 12; obj2[4, 4] = 14
    part2 = _blank(); part2[3:5, 3:5] = 300; part2[0, 3] = 6
    # Image 4: wood covering the whole mask as a pixel label.
    mat4 = np.full((SH, SW), 5, dtype=np.int32)
    return [
        {"color": [color0], "object": [obj0], "part": [part0a, part0b], "material": [mat0]},
        {"color": [color1]},
        {"object": [obj2], "part": [part2]},
        {},
        {"material": [mat4]},
    ]


IMAGES = ["ade20k/ADE_train_00000001.jpg", "opensurfaces/100.jpg", "pascal/2008_000001.jpg",
          "dtd/striped_0001.jpg", "ade20k/ADE_val_00000002.jpg"]
SPLITS = ["train", "val", "train", "train", "val"]
IMAGE_CELLS = [{"scene": "7", "texture": "9"}, {"scene": "7;8"}, {"texture": "9"}, {},
               {"scene": "8", "texture": "9"}]


def write_broden_fixture(root: str | Path, label_zero_row: bool = False,
                         image_ext: str = ".jpg") -> Fixture:
    """Write the fixture under `root`; `label_zero_row` adds label.csv's optional row 0;
    `image_ext` ".png" writes lossless images (as the world does) instead of JPGs."""
    root = Path(root)
    img_dir = root / "images"
    images = [im.rsplit(".", 1)[0] + image_ext for im in IMAGES]
    rows, masks, image_level, files = [], [], [], {}
    for i, (image, pngs) in enumerate(zip(images, _fixture_pngs())):
        _write_jpg(img_dir / image, seed=i)
        stem = image.rsplit(".", 1)[0]
        cells = dict(IMAGE_CELLS[i])
        found: dict[int, np.ndarray] = {}
        for cat, arrays in pngs.items():
            names = []
            for j, arr in enumerate(arrays):
                name = f"{stem}_{cat}.png" if len(arrays) == 1 else f"{stem}_{cat}_{j + 1}.png"
                write_label_png(img_dir / name, arr)
                files[f"{i}:{cat}:{j}"] = img_dir / name
                names.append(name)
                for n in np.unique(arr):
                    if n not in (0, 14):
                        found[int(n)] = found.get(int(n), np.zeros((SH, SW), bool)) | (arr == n)
            cells[cat] = ";".join(names)
        image_level.append({int(n) for c in ("scene", "texture") for n in cells.get(c, "").split(";") if n})
        masks.append(found)
        rows.append([image, SPLITS[i], IH, IW, SH, SW] + [cells.get(c, "") for c in CATEGORIES])
        files[f"{i}:image"] = img_dir / image
    _write_csv(root / "index.csv", INDEX_HEADER, rows)
    _write_label_csv(root / "label.csv", label_zero_row)
    _write_category_csvs(root)
    return Fixture(root, images, masks, image_level, files)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_label_csv(path: Path, zero_row: bool, labels=LABELS) -> None:
    rows = [[0, "-", "-", 0, 0.0, ""]] if zero_row else []
    rows += [[n, name, cat, 1, 0.1, syns] for n, name, cat, syns in labels]
    _write_csv(path, ["number", "name", "category", "frequency", "coverage", "syns"], rows)


def _write_category_csvs(root: Path, labels=LABELS, categories=CATEGORIES) -> None:
    """category.csv and c_<category>.csv; codes are dense per category from 1."""
    cat_rows = []
    for cat in categories:
        members = [(n, name) for n, name, field, _ in labels if f"{cat}(" in field]
        rows = [[code, n, name, 1, 0.1] for code, (n, name) in enumerate(members, start=1)]
        _write_csv(root / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"], rows)
        cat_rows.append([cat, 1, len(members), len(members), len(members)])
    _write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"], cat_rows)


def write_synthetic_broden(root: str | Path, n_images: int, mask_size: int = 112,
                           image_size: int = 32, seed: int = 0) -> Path:
    """A random Broden-format set at real Broden's mask size, for throughput checks.

    ~300 labels spread like Broden: colour, object and material PNGs with random
    rectangles, a part cell of two PNGs, numeric scene and texture labels.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ranges = {"color": range(1, 12), "object": range(12, 212), "part": range(212, 262),
              "material": range(262, 288), "scene": range(288, 388), "texture": range(388, 435)}
    labels = [(n, f"{cat}-{n}", f"{cat}(1)", "") for cat, r in ranges.items() for n in r]
    rows = []
    for i in range(n_images):
        image = f"synth/{i:06d}.jpg"
        _write_jpg(root / "images" / image, seed=i, size=(image_size, image_size))
        cells = {}
        for cat, n_png in (("color", 1), ("object", 1), ("part", 2), ("material", 1)):
            names = []
            for j in range(n_png):
                arr = _random_rectangles(rng, mask_size, ranges[cat], k=int(rng.integers(1, 8)))
                name = f"synth/{i:06d}_{cat}_{j + 1}.png"
                write_label_png(root / "images" / name, arr)
                names.append(name)
            cells[cat] = ";".join(names)
        cells["scene"] = str(rng.choice(list(ranges["scene"])))
        cells["texture"] = str(rng.choice(list(ranges["texture"]))) if rng.random() < 0.3 else ""
        rows.append([image, "train", image_size, image_size, mask_size, mask_size]
                    + [cells[c] for c in CATEGORIES])
    _write_csv(root / "index.csv", INDEX_HEADER, rows)
    _write_label_csv(root / "label.csv", False, labels)
    _write_category_csvs(root, labels)
    return root


def _random_rectangles(rng, size: int, numbers: range, k: int) -> np.ndarray:
    arr = np.zeros((size, size), dtype=np.int32)
    for n in rng.choice(list(numbers), size=k):
        y0, x0 = rng.integers(0, size, 2)
        h, w = rng.integers(size // 8, size // 2, 2)
        arr[y0:y0 + h, x0:x0 + w] = n
    return arr
