"""The embedded probe world: a generated dataset in Broden's format with known ground truth.

Objects of several shapes, colours and textures lie on procedurally textured scene
backgrounds. Pixel masks: colour, object (shape), texture, part (border, core; one
PNG per object, so part cells hold several `;`-joined PNGs). Image-level: scene
(a numeric label). Image class (world extension, `classes.csv` + `image_class.csv`):
each class is a rule over combinations of concepts, and every image satisfies
exactly one rule, so a classifier needs compositional units.

label.csv `frequency` = images containing the label; `coverage` = mean pixel share
of the label over the images that contain it.
Image i is drawn from `default_rng([seed, i])`, so it does not depend on n_images;
the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from nexplain.io import atomic_dir

COLORS = {
    "red": (220, 30, 30), "green": (40, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (245, 245, 245), "black": (20, 20, 20),
    "pink": (250, 130, 190), "cyan": (30, 220, 220),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring")
TEXTURES = ("solid", "striped", "dotted", "checkered", "wavy")
PARTS = ("border", "core")
SCENES = ("grass", "water", "sand", "sky", "snow", "road", "forest", "lava")

# label numbers are global, 1.., in this category order
CATEGORIES = {"color": tuple(COLORS), "object": SHAPES, "part": PARTS, "texture": TEXTURES, "scene": SCENES}
INDEX_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material", "scene", "texture"]


def _label_numbers() -> dict[tuple[str, str], int]:
    numbers, n = {}, 1
    for cat, names in CATEGORIES.items():
        for name in names:
            numbers[(cat, name)] = n
            n += 1
    return numbers


LABELS = _label_numbers()


# --- classes: (name, readable rule, predicate over (scene, objects), builder of a positive) ---

def _has(objs, shape=None, color=None, texture=None):
    return any((shape is None or o[0] == shape) and (color is None or o[1] in _tuple(color))
               and (texture is None or o[2] == texture) for o in objs)


def _tuple(x):
    return (x,) if isinstance(x, str) else x


CLASSES = [
    ("red circle", "a red circle",
     lambda s, o: _has(o, "circle", "red"),
     lambda r: (None, [("circle", "red", None)])),
    ("striped square or star on water", "scene water AND (striped square OR star)",
     lambda s, o: s == "water" and (_has(o, "square", texture="striped") or _has(o, "star")),
     lambda r: ("water", [("square", None, "striped") if r.random() < 0.5 else ("star", None, None)])),
    ("dotted in snow", "scene snow AND a dotted object",
     lambda s, o: s == "snow" and _has(o, texture="dotted"),
     lambda r: ("snow", [(None, None, "dotted")])),
    ("yellow and purple", "a yellow object AND a purple object",
     lambda s, o: _has(o, color="yellow") and _has(o, color="purple"),
     lambda r: (None, [(None, "yellow", None), (None, "purple", None)])),
    ("checkered cross", "a checkered cross",
     lambda s, o: _has(o, "cross", texture="checkered"),
     lambda r: (None, [("cross", None, "checkered")])),
    ("green on road", "scene road AND a green object",
     lambda s, o: s == "road" and _has(o, color="green"),
     lambda r: ("road", [(None, "green", None)])),
    ("blue triangle on sand", "scene sand AND a blue triangle",
     lambda s, o: s == "sand" and _has(o, "triangle", "blue"),
     lambda r: ("sand", [("triangle", "blue", None)])),
    ("two rings", "at least two rings",
     lambda s, o: sum(x[0] == "ring" for x in o) >= 2,
     lambda r: (None, [("ring", None, None), ("ring", None, None)])),
    ("orange hexagon in forest or lava", "scene (forest OR lava) AND an orange hexagon",
     lambda s, o: s in ("forest", "lava") and _has(o, "hexagon", "orange"),
     lambda r: (("forest", "lava")[int(r.integers(2))], [("hexagon", "orange", None)])),
    ("wavy black or white", "a wavy object that is black OR white",
     lambda s, o: _has(o, color=("black", "white"), texture="wavy"),
     lambda r: (None, [(None, ("black", "white")[int(r.integers(2))], "wavy")])),
]


def matching_classes(scene: str, objects: list[tuple[str, str, str]]) -> list[int]:
    """Ground truth: the classes whose rule holds for a scene and (shape, colour, texture) objects."""
    return [k for k, (_, _, rule, _) in enumerate(CLASSES) if rule(scene, objects)]


# --- sampling ---

def _fill(rng, spec):
    shape, color, texture = spec
    return (shape or SHAPES[rng.integers(len(SHAPES))],
            color or tuple(COLORS)[rng.integers(len(COLORS))],
            texture or TEXTURES[rng.integers(len(TEXTURES))])


def sample_scene(rng, cls: int, tries: int = 200):
    """A scene and objects satisfying exactly class `cls`."""
    build = CLASSES[cls][3]
    for attempt in range(tries):
        scene, required = build(rng)
        scene = scene or SCENES[rng.integers(len(SCENES))]
        objects = [_fill(rng, spec) for spec in required]
        n_extra = 0 if attempt > tries // 2 else int(rng.choice(3, p=[0.2, 0.4, 0.4]))
        objects += [_fill(rng, (None, None, None)) for _ in range(n_extra)]
        order = rng.permutation(len(objects))
        objects = [objects[i] for i in order]
        if matching_classes(scene, objects) == [cls]:
            return scene, objects
    raise RuntimeError(f"could not sample class {CLASSES[cls][0]!r}")  # unreachable with these rules


def _place(rng, n: int, size: int, tries: int = 500):
    """Non-overlapping (cx, cy, r) circles inside the image, so every object stays fully visible."""
    lo, hi = 0.09 * size, 0.17 * size
    for _ in range(tries):
        placed = []
        for _ in range(n):
            for _ in range(100):
                r = rng.uniform(lo, hi)
                cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
                if all(np.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                    placed.append((cx, cy, r))
                    break
        if len(placed) == n:
            return placed
        lo, hi = lo * 0.95, hi * 0.95  # crowded: shrink and retry
    raise RuntimeError(f"could not place {n} objects in {size}px")


# --- rendering ---

def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels of a unit-radius shape in normalised coordinates (u right, v down)."""
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    if shape == "circle":
        return rho <= 1
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8
    if shape == "triangle":
        return (v <= 0.75) & (abs(u) <= (v + 1) * 0.55)
    if shape == "star":
        return rho <= 0.45 + 0.55 * ((np.cos(5 * (theta + np.pi / 2)) + 1) / 2) ** 2
    if shape == "cross":
        return ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))
    if shape == "diamond":
        return abs(u) + abs(v) <= 1
    if shape == "hexagon":
        return np.maximum(abs(u) * 0.866 + abs(v) * 0.5, abs(v)) <= 0.87
    if shape == "ring":
        return (rho <= 1) & (rho >= 0.55)
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def texture_pattern(texture: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Where the contrasting shade goes."""
    if texture == "solid":
        return np.zeros(x.shape, bool)
    if texture == "striped":
        return ((x + y) // (period / 2)) % 2 == 1
    if texture == "dotted":
        dx, dy = x % period - period / 2, y % period - period / 2
        return dx * dx + dy * dy <= (period / 4) ** 2
    if texture == "checkered":
        return ((x // (period / 2)) + (y // (period / 2))) % 2 == 1
    if texture == "wavy":
        return ((y + 0.25 * period * np.sin(x * 2 * np.pi / period)) // (period / 2)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}; valid: {', '.join(TEXTURES)}")


def _shade(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, float)
    # darken light colours, lighten dark ones: the hue stays recognisable
    return rgb * 0.5 if rgb.mean() > 100 else rgb + (255 - rgb) * 0.45


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    small = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR), float) / 255 - 0.5


def background(scene: str, rng, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(float) * (112 / size)
    fine = rng.random((size, size)) - 0.5
    base = {"grass": (60, 140, 50), "water": (40, 90, 180), "sand": (215, 190, 130), "sky": (120, 170, 240),
            "snow": (232, 236, 244), "road": (80, 80, 86), "forest": (30, 80, 35), "lava": (120, 22, 12)}[scene]
    img = np.broadcast_to(np.asarray(base, float), (size, size, 3)).copy()
    if scene == "grass":
        img += (40 * fine + 25 * np.sin(x * 1.3 + 3 * fine))[..., None]
    elif scene == "water":
        img += (25 * np.sin(y * 0.6 + 2 * np.sin(x * 0.15)))[..., None] * np.array([0.5, 0.8, 1.0])
    elif scene == "sand":
        img += (30 * fine * (rng.random((size, size)) < 0.3))[..., None]
    elif scene == "sky":
        img += (y / 112)[..., None] * np.array([80, 55, 10]) + 20 * _smooth_noise(rng, size, 4)[..., None]
    elif scene == "snow":
        img += (15 * fine)[..., None]
    elif scene == "road":
        img += (12 * fine)[..., None]
        lane = (abs(x - 56) < 2) & ((y // 10) % 2 == 0)
        img[lane] = (230, 220, 90)
    elif scene == "forest":
        img += (60 * _smooth_noise(rng, size, 8))[..., None] * np.array([0.6, 1.0, 0.6])
    elif scene == "lava":
        cracks = np.abs(np.sin(x * 0.3 + 4 * _smooth_noise(rng, size, 5)) * np.sin(y * 0.25)) < 0.15
        img[cracks] = (250, 150, 30)
    return img


def render(scene: str, objects, rng, size: int):
    """RGB uint8 image and the per-pixel object index (-1 = background) at full resolution."""
    img = background(scene, rng, size)
    owner = np.full((size, size), -1, np.int16)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    period = max(4.0, size / 14)
    for k, ((shape, color, texture), (cx, cy, r)) in enumerate(zip(objects, _place(rng, len(objects), size))):
        theta = rng.uniform(-0.3, 0.3) if shape in ("square", "cross", "hexagon") else 0.0
        du, dv = (xx - cx) / r, (yy - cy) / r
        u, v = du * np.cos(theta) + dv * np.sin(theta), -du * np.sin(theta) + dv * np.cos(theta)
        mask = shape_mask(shape, u, v)
        alt = texture_pattern(texture, xx - cx, yy - cy, period)
        img[mask] = np.where(alt[mask][:, None], _shade(COLORS[color]), np.asarray(COLORS[color], float))
        owner[mask] = k
    return np.clip(img, 0, 255).round().astype(np.uint8), owner


def _downsample(owner: np.ndarray, mask_size: int) -> np.ndarray:
    """Sample the label map at mask-pixel centres, so masks align with the image."""
    idx = ((np.arange(mask_size) + 0.5) * owner.shape[0] / mask_size).astype(int)
    return owner[np.ix_(idx, idx)]


def _border(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _label_png(labels: np.ndarray, path: Path) -> None:
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = labels % 256, labels // 256  # Broden: label = R + 256 * G
    Image.fromarray(rgb).save(path, format="PNG", compress_level=6)


# --- the dataset ---

def _check_args(n_images, image_size, mask_size, splits):
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size!r}")
    if not 1 <= mask_size <= image_size:
        raise ValueError(f"mask_size must be between 1 and image_size ({image_size}), got {mask_size!r}")
    if set(splits) - {"train", "val", "test"} or abs(sum(splits.values()) - 1) > 1e-6:
        raise ValueError(f"splits must map train/val/test to fractions summing to 1, got {splits!r}")


def assign(n: int, seed: int, splits: dict) -> tuple[np.ndarray, np.ndarray]:
    """Balanced classes and exact split fractions, both shuffled from the seed."""
    rng = np.random.default_rng([seed, 2**31])
    classes = rng.permutation(np.arange(n) % len(CLASSES))
    counts = np.floor(np.array(list(splits.values())) * n).astype(int)
    counts[0] += n - counts.sum()
    split = rng.permutation(np.repeat(list(splits), counts))
    return classes, split


def generate_world(root, *, n_images=3000, image_size=112, mask_size=56, seed=0,
                   splits=None, progress=True) -> dict:
    """Write the world to `root` (atomically) in Broden format; return a summary."""
    splits = dict(splits or {"train": 0.7, "val": 0.1, "test": 0.2})
    _check_args(n_images, image_size, mask_size, splits)
    classes, split = assign(n_images, seed, splits)
    n_labels = len(LABELS)
    freq = np.zeros(n_labels + 1, np.int64)      # images containing each label
    share = np.zeros(n_labels + 1, np.float64)   # summed pixel share over those images
    rows, class_rows = [], []
    with atomic_dir(root) as tmp:
        (tmp / "images" / "world").mkdir(parents=True)
        for i in tqdm(range(n_images), desc="world", disable=not progress, mininterval=2):
            rng = np.random.default_rng([seed, i])
            scene, objects = sample_scene(rng, int(classes[i]))
            img, owner = render(scene, objects, rng, image_size)
            stem = f"world/{i:05d}"
            Image.fromarray(img).save(tmp / "images" / f"{stem}.png", format="PNG", compress_level=6)
            row = _write_masks(tmp / "images", stem, objects, _downsample(owner, mask_size), freq, share)
            freq[LABELS[("scene", scene)]] += 1
            share[LABELS[("scene", scene)]] += 1.0
            rows.append({"image": f"{stem}.png", "split": split[i], "ih": image_size, "iw": image_size,
                         "sh": mask_size, "sw": mask_size, "material": "", "scene": str(LABELS[("scene", scene)]), **row})
            class_rows.append((f"{stem}.png", int(classes[i])))
        _write_tables(tmp, rows, class_rows, freq, share)
        params = {"n_images": n_images, "image_size": image_size, "mask_size": mask_size, "seed": seed, "splits": splits}
        (tmp / "world.json").write_text(json.dumps(
            {"generator": "nexplain.data.world", "params": params,
             "concepts": {c: list(names) for c, names in CATEGORIES.items()},
             "classes": [{"number": k, "name": n, "rule": r} for k, (n, r, _, _) in enumerate(CLASSES)]},
            indent=2, sort_keys=True) + "\n")
    return {"n_images": n_images, "n_concepts": n_labels, "n_classes": len(CLASSES),
            "class_counts": np.bincount(classes, minlength=len(CLASSES)).tolist()}


def _write_masks(images: Path, stem: str, objects, owner: np.ndarray, freq, share) -> dict:
    """Write colour/object/texture PNGs and one part PNG per object; return the index cells."""
    cells = {}
    area = owner.size
    for cat, attr in (("color", 1), ("object", 0), ("texture", 2)):
        labels = np.zeros(owner.shape, np.int32)
        for k, obj in enumerate(objects):
            labels[owner == k] = LABELS[(cat, obj[attr])]
        _label_png(labels, images / f"{stem}_{cat}.png")
        cells[cat] = f"{stem}_{cat}.png"
        _count(labels, area, freq, share)
    parts = []
    part_labels = np.zeros(owner.shape, np.int32)
    for k in range(len(objects)):
        mask = owner == k
        if not mask.any():
            continue
        labels = np.zeros(owner.shape, np.int32)
        border = _border(mask)
        labels[border] = LABELS[("part", "border")]
        labels[mask & ~border] = LABELS[("part", "core")]
        part_labels = np.maximum(part_labels, labels)
        _label_png(labels, images / f"{stem}_part_{k}.png")
        parts.append(f"{stem}_part_{k}.png")
    _count(part_labels, area, freq, share)
    cells["part"] = ";".join(parts)
    return cells


def _count(labels: np.ndarray, area: int, freq, share) -> None:
    counts = np.bincount(labels.ravel(), minlength=len(freq))[: len(freq)]
    present = np.flatnonzero(counts[1:]) + 1
    freq[present] += 1
    share[present] += counts[present] / area


def _write_tables(root: Path, rows, class_rows, freq, share) -> None:
    def write(name, header, data):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(data)

    write("index.csv", INDEX_COLUMNS, [[r.get(c, "") for c in INDEX_COLUMNS] for r in rows])
    coverage = np.divide(share, np.maximum(freq, 1))
    labels, cats = [], []
    for cat, names in CATEGORIES.items():
        numbers = [LABELS[(cat, n)] for n in names]
        codes = [[code, LABELS[(cat, n)], n, int(freq[LABELS[(cat, n)]]), f"{coverage[LABELS[(cat, n)]]:.6f}"]
                 for code, n in enumerate(names, start=1)]
        write(f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"], codes)
        cat_images = len({r["image"] for r in rows if r.get(cat)})
        cats.append([cat, min(numbers), max(numbers), len(names), cat_images])
        labels += [[LABELS[(cat, n)], n, f"{cat}({int(freq[LABELS[(cat, n)]])})", int(freq[LABELS[(cat, n)]]),
                    f"{coverage[LABELS[(cat, n)]]:.6f}", ""] for n in names]
    write("category.csv", ["name", "first", "last", "count", "frequency"], cats)
    write("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], labels)
    write("classes.csv", ["number", "name", "rule"], [[k, n, r] for k, (n, r, _, _) in enumerate(CLASSES)])
    write("image_class.csv", ["image", "class"], class_rows)
