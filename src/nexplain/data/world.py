"""The embedded probe world: a synthetic Broden-format dataset with known ground truth.

Each image is a procedurally textured scene with one to four analytic shapes on it.
Every pixel's shape, colour, texture and part is known exactly, and every image has
a class whose rule combines several concepts ("a red circle", "a dotted object in a
snow scene"), so units of a model trained on the classes become compositional.

Files written under `root` (Broden's format, docs/methods.md, plus side files):

    index.csv, category.csv, label.csv, c_<category>.csv
    images/<split>/<id>.png                         the image, RGB
    images/<split>/<id>_{color,object,texture}.png  pixel labels, label = R + 256*G
    images/<split>/<id>_part_<k>.png                border/core of the k-th object
    classes.csv (number,name,rule), image_class.csv (image,class), world.json

Label numbers are global and start at 1 (0 = unlabelled), numbered category by
category in index.csv column order. `frequency` (label.csv, c_<category>.csv) is the
number of images holding the label; `coverage` is the mean share of mask pixels the
label covers over those images (1.0 for the image-level scene labels). category.csv
`frequency` counts images holding any label of the category. The world has no
material labels: that column is empty and category.csv has no material row.

Class rules are existential: "a red circle" holds when at least one object is a red
circle, whatever else is in the image. Each image satisfies exactly one rule.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from nexplain.data import render
from nexplain.io import atomic_dir

WORLD_VERSION = 1  # bump whenever drawing or rules change: same arguments, new bytes

COLORS = MappingProxyType({
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220),
    "yellow": (240, 220, 30), "purple": (130, 40, 170), "orange": (245, 130, 20),
    "white": (245, 245, 245), "black": (20, 20, 20), "pink": (245, 140, 190),
    "cyan": (40, 210, 220),
})
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "hexagon")
TEXTURES = ("solid", "striped", "dotted", "checkered", "wavy")
PARTS = ("border", "core")
SCENES = ("grass", "water", "sand", "sky", "snow", "road", "forest", "lava", "brick", "night")
assert tuple(render.BACKGROUNDS) == SCENES  # every scene has a painter

# Category -> concept names, in index.csv column order (material has none).
CATEGORIES = MappingProxyType({
    "color": tuple(COLORS), "object": SHAPES, "part": PARTS, "scene": SCENES, "texture": TEXTURES,
})
LABELS = MappingProxyType({  # (category, name) -> global label number
    key: number for number, key in enumerate(
        ((cat, name) for cat, names in CATEGORIES.items() for name in names), start=1)
})

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SPLITS = MappingProxyType({"train": 0.7, "val": 0.1, "test": 0.2})


class Obj(NamedTuple):
    shape: str
    color: str
    texture: str


def _pick(rng, values):
    return values[rng.integers(len(values))]


@dataclass(frozen=True)
class Need:
    """One object a class rule requires: the allowed values of each attribute."""
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    textures: tuple[str, ...] = TEXTURES

    def matches(self, obj: Obj) -> bool:
        return obj.shape in self.shapes and obj.color in self.colors and obj.texture in self.textures

    def sample(self, rng) -> Obj:
        return Obj(_pick(rng, self.shapes), _pick(rng, self.colors), _pick(rng, self.textures))


@dataclass(frozen=True)
class ClassRule:
    """A class: the scene must be one of `scenes` and distinct objects must meet `needs`."""
    name: str
    rule: str
    needs: tuple[Need, ...]
    scenes: tuple[str, ...] = SCENES

    def holds(self, scene: str, objects) -> bool:
        if scene not in self.scenes:
            return False
        return any(all(need.matches(o) for need, o in zip(self.needs, chosen))
                   for chosen in permutations(objects, len(self.needs)))


CLASSES = (
    ClassRule("red_circle", "a red circle", (Need(shapes=("circle",), colors=("red",)),)),
    ClassRule("striped_square_or_star_on_water", "a striped square or star, in a water scene",
              (Need(shapes=("square", "star"), textures=("striped",)),), scenes=("water",)),
    ClassRule("dotted_object_in_snow", "a dotted object, in a snow scene",
              (Need(textures=("dotted",)),), scenes=("snow",)),
    ClassRule("yellow_and_purple", "a yellow object and a purple object",
              (Need(colors=("yellow",)), Need(colors=("purple",)))),
    ClassRule("checkered_cross", "a checkered cross",
              (Need(shapes=("cross",), textures=("checkered",)),)),
    ClassRule("green_object_on_road", "a green object, in a road scene",
              (Need(colors=("green",)),), scenes=("road",)),
    ClassRule("blue_triangle_on_sand", "a blue triangle, in a sand scene",
              (Need(shapes=("triangle",), colors=("blue",)),), scenes=("sand",)),
    ClassRule("diamond_not_red", "a diamond that is not red",
              (Need(shapes=("diamond",), colors=tuple(c for c in COLORS if c != "red")),)),
    ClassRule("two_circles", "two or more circles",
              (Need(shapes=("circle",)), Need(shapes=("circle",)))),
    ClassRule("wavy_ring_or_hexagon", "a wavy ring or hexagon",
              (Need(shapes=("ring", "hexagon"), textures=("wavy",)),)),
)


def matching_classes(scene: str, objects) -> list[int]:
    """Numbers of the class rules that (scene, objects) satisfies."""
    return [c for c, rule in enumerate(CLASSES) if rule.holds(scene, objects)]



_MIN_VISIBLE = 0.5    # share of its own area an object must keep after occlusion
_MIN_MASK_PIXELS = 2  # and mask pixels, so the object is present in the ground truth
_MAX_TRIES = 1000


def _place(rng, objects, n, idx):
    """Random positions/sizes until every object stays visible enough at both resolutions."""
    s = n / 112
    for _ in range(_MAX_TRIES):
        r = rng.uniform(9 * s, 20 * s, len(objects))  # 18-40 px diameter at 112 px
        x, y = rng.uniform(r, n - r, (2, len(objects)))
        angle = np.deg2rad(rng.uniform(-15, 15, len(objects)))
        layout = list(zip(x, y, r, angle))
        owner, part, rgb, areas = render.paint(objects, layout, n, COLORS)
        owner_m = owner[np.ix_(idx, idx)]
        if all((owner == k).sum() >= _MIN_VISIBLE * a and (owner_m == k).sum() >= _MIN_MASK_PIXELS
               for k, a in enumerate(areas, start=1)):
            return layout
    raise RuntimeError(f"could not place {len(objects)} visible objects at image_size {n}")


def _sample_content(rng, cls):
    """Scene and objects meeting class `cls`'s rule and no other rule."""
    rule = CLASSES[cls]
    for _ in range(_MAX_TRIES):
        scene = _pick(rng, rule.scenes)
        objects = [need.sample(rng) for need in rule.needs]
        objects += [Need().sample(rng) for _ in range(rng.integers(0, 3))]  # 0-2 distractors
        rng.shuffle(objects)  # draw order: required objects are not always on top
        if matching_classes(scene, objects) == [cls]:
            return scene, objects
    raise RuntimeError(f"could not sample an image of class {rule.name}")


class Sample(NamedTuple):
    image: np.ndarray   # (n, n, 3) uint8
    scene: str
    objects: list[Obj]  # in draw order
    owner: np.ndarray   # (m, m) int: 0 background, k = objects[k-1]
    part: np.ndarray    # (m, m) uint8: 1 border, 2 core


class Spec(NamedTuple):
    """Everything that fixes image i: its content, where each object lies, the background
    drawn for its scene and the pixel noise. Editing the content and rendering again
    changes only the pixels the edit touches (nexplain.causal.edits)."""
    scene: str
    objects: list[Obj]  # in draw order
    layout: list        # (x, y, r, angle) per object
    background: np.ndarray  # (n, n, 3) float
    noise: np.ndarray       # (n, n, 3) float
    mask_size: int


def make_spec(seed: int, i: int, cls: int, image_size: int, mask_size: int) -> Spec:
    """Image i's spec, given its class; depends on (seed, i) only, not on n_images."""
    rng = np.random.default_rng([seed, i])
    scene, objects = _sample_content(rng, cls)
    idx = _cell_centres(image_size, mask_size)
    background = render.background(rng, scene, image_size)
    layout = _place(rng, objects, image_size, idx)
    noise = rng.normal(0, 3, background.shape)
    return Spec(scene, objects, layout, background, noise, mask_size)


def _cell_centres(image_size: int, mask_size: int) -> np.ndarray:
    return ((np.arange(mask_size) + 0.5) * image_size / mask_size).astype(int)


def render_spec(spec: Spec) -> Sample:
    n = spec.background.shape[0]
    idx = _cell_centres(n, spec.mask_size)
    owner, part, rgb, _ = render.paint(spec.objects, spec.layout, n, COLORS)
    image = np.where(owner[..., None] > 0, rgb, spec.background) + spec.noise
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Sample(image, spec.scene, spec.objects, owner[np.ix_(idx, idx)], part[np.ix_(idx, idx)])


def make_sample(seed: int, i: int, cls: int, image_size: int, mask_size: int) -> Sample:
    """Image i of the world, given its class; depends on (seed, i) only, not on n_images."""
    return render_spec(make_spec(seed, i, cls, image_size, mask_size))


# ---------------------------------------------------------------- writing

def _save_png(array, path):
    Image.fromarray(array).save(path, format="PNG", compress_level=6)  # no text chunks


def _save_labels(labels, path):
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = labels % 256, labels // 256
    _save_png(rgb, path)


class _Stats:
    """Per-label image and pixel counts (frequency/coverage), per-category image counts."""

    def __init__(self):
        self.images = np.zeros(len(LABELS) + 1, np.int64)
        self.pixels = np.zeros(len(LABELS) + 1, np.int64)
        self.category_images = dict.fromkeys(CATEGORIES, 0)

    def add(self, category, labels):
        counts = np.bincount(labels.ravel(), minlength=len(LABELS) + 1)
        counts[0] = 0
        self.images += counts > 0
        self.pixels += counts
        self.category_images[category] += int(counts.any())


def _lut(category, names):
    """Lookup table owner index -> label number of each object's attribute (0 -> 0)."""
    return np.array([0] + [LABELS[category, name] for name in names], np.int32)


def _write_sample(images_dir, stem, sample, stats):
    """Write one image and its label PNGs; return its index.csv row."""
    _save_png(sample.image, images_dir / f"{stem}.png")
    row = {"image": f"{stem}.png", "ih": sample.image.shape[0], "iw": sample.image.shape[1],
           "sh": sample.owner.shape[0], "sw": sample.owner.shape[1], "material": ""}
    for category, field in (("color", "color"), ("object", "shape"), ("texture", "texture")):
        labels = _lut(category, [getattr(o, field) for o in sample.objects])[sample.owner]
        _save_labels(labels, images_dir / f"{stem}_{category}.png")
        stats.add(category, labels)
        row[category] = f"{stem}_{category}.png"
    part_labels = _lut("part", PARTS)[sample.part]
    parts = []
    for k in range(1, len(sample.objects) + 1):  # one PNG per object: Broden's multi-part cell
        parts.append(f"{stem}_part_{k}.png")
        _save_labels(np.where(sample.owner == k, part_labels, 0), images_dir / parts[-1])
    stats.add("part", part_labels)
    row["part"] = ";".join(parts)
    scene = LABELS["scene", sample.scene]
    stats.add("scene", np.full(sample.owner.shape, scene))
    row["scene"] = str(scene)
    return row


INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw",
                 "color", "object", "part", "material", "scene", "texture")


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root, rows, stats, n_mask_pixels):
    _write_csv(root / "index.csv", INDEX_COLUMNS, ([row[c] for c in INDEX_COLUMNS] for row in rows))
    freq = stats.images

    def coverage(number):
        return f"{stats.pixels[number] / max(freq[number] * n_mask_pixels, 1):.6f}"

    labels, categories = [], []
    for category, names in CATEGORIES.items():
        numbers = [LABELS[category, name] for name in names]
        categories.append((category, numbers[0], numbers[-1], len(numbers), stats.category_images[category]))
        _write_csv(root / f"c_{category}.csv", ("code", "number", "name", "frequency", "coverage"),
                   [(code, num, name, freq[num], coverage(num))
                    for code, (num, name) in enumerate(zip(numbers, names), start=1)])
        labels += [(num, name, f"{category}({freq[num]})", freq[num], coverage(num), "")
                   for num, name in zip(numbers, names)]
    _write_csv(root / "label.csv", ("number", "name", "category", "frequency", "coverage", "syns"), labels)
    _write_csv(root / "category.csv", ("name", "first", "last", "count", "frequency"), categories)


def _write_classes(root, rows, classes):
    _write_csv(root / "classes.csv", ("number", "name", "rule"),
               [(c, rule.name, rule.rule) for c, rule in enumerate(CLASSES)])
    _write_csv(root / "image_class.csv", ("image", "class"),
               [(row["image"], int(c)) for row, c in zip(rows, classes)])


# ---------------------------------------------------------------- schedule

_CLASS_STREAM, _SPLIT_STREAM = 1, 2  # last seed word, nonzero: [a, b, 0] would equal [a, b]


def _image_classes(seed, n_images):
    """Each block of K consecutive images holds every class once, in a seeded order:
    balanced classes, and image i's class does not depend on n_images."""
    k = len(CLASSES)
    blocks = [np.random.default_rng([seed, b, _CLASS_STREAM]).permutation(k)
              for b in range(math.ceil(n_images / k))]
    return np.concatenate(blocks)[:n_images]


def _assign_splits(classes, splits, seed):
    """Exact split sizes, stratified by class: shuffle each class, spread its images
    evenly over one shared order, and cut that order at the cumulative fractions."""
    n = len(classes)
    key = np.empty(n)
    for c in np.unique(classes):
        ids = np.flatnonzero(classes == c)
        perm = np.random.default_rng([seed, int(c), _SPLIT_STREAM]).permutation(ids)
        key[perm] = (np.arange(len(ids)) + 0.5) / len(ids)
    order = np.lexsort((classes, key))
    names = [s for s in SPLIT_NAMES if s in splits]
    cuts = np.round(np.cumsum([splits[s] for s in names]) * n).astype(int)
    cuts[-1] = n
    out = np.empty(n, dtype=object)
    for name, start, stop in zip(names, np.r_[0, cuts[:-1]], cuts):
        out[order[start:stop]] = name
    return out


def _validate(n_images, image_size, mask_size, seed, splits):
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n_images) or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    if not is_int(mask_size) or mask_size < 16:
        raise ValueError(f"mask_size must be an integer >= 16, got {mask_size!r}")
    if not is_int(image_size) or image_size < mask_size:
        raise ValueError(f"image_size must be an integer >= mask_size ({mask_size}), got {image_size!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(splits, Mapping) or not splits or set(splits) - set(SPLIT_NAMES):
        raise ValueError(f"splits must map some of {SPLIT_NAMES} to fractions, got {splits!r}")
    fractions = list(splits.values())
    if not all(isinstance(f, (int, float)) and math.isfinite(f) and f >= 0 for f in fractions):
        raise ValueError(f"splits fractions must be finite numbers >= 0, got {dict(splits)!r}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"splits fractions must sum to 1, got {sum(fractions):g}")


def generate_world(root, *, n_images: int = 3000, image_size: int = 112, mask_size: int = 56,
                   seed: int = 0, splits: Mapping[str, float] = DEFAULT_SPLITS,
                   progress: bool = True) -> dict:
    """Write the probe world to `root` (atomically) and return a summary.

    The same arguments give byte-identical files. Image i depends only on (seed, i).
    """
    _validate(n_images, image_size, mask_size, seed, splits)
    classes = _image_classes(seed, n_images)
    split_of = _assign_splits(classes, splits, seed)
    with atomic_dir(root) as tmp:
        images_dir = Path(tmp) / "images"
        for name in sorted(set(split_of)):
            (images_dir / name).mkdir(parents=True)
        stats, rows = _Stats(), []
        for i in tqdm(range(n_images), desc="world", disable=not progress, file=sys.stderr):
            sample = make_sample(seed, i, int(classes[i]), image_size, mask_size)
            rows.append({**_write_sample(images_dir, f"{split_of[i]}/{i:06d}", sample, stats),
                         "split": split_of[i]})
        _write_tables(Path(tmp), rows, stats, mask_size * mask_size)
        _write_classes(Path(tmp), rows, classes)
        params = {"generator": "nexplain.data.world", "world_version": WORLD_VERSION,
                  "n_images": int(n_images), "image_size": int(image_size),
                  "mask_size": int(mask_size), "seed": int(seed),
                  "splits": {s: float(splits[s]) for s in SPLIT_NAMES if s in splits}}
        (Path(tmp) / "world.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return {
        "n_images": int(n_images),
        "n_concepts": len(LABELS),
        "n_categories": len(CATEGORIES),
        "n_classes": len(CLASSES),
        "class_counts": {rule.name: int((classes == c).sum()) for c, rule in enumerate(CLASSES)},
        "split_counts": {s: int((split_of == s).sum()) for s in SPLIT_NAMES if s in splits},
    }
