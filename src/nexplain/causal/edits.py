"""Counterfactual world images: one image's spec with a concept added or removed, nothing else.

Every world image is rendered from a `Spec` (scene, objects, their layout, the scene's
background and the pixel noise), so an edit that changes one attribute and renders again
changes only the pixels that attribute paints. The concepts an edit can toggle:
- colour, shape, texture: an object's attribute. Removing c gives every object holding c
  another value of the same kind; adding c gives it to one object that lacks it. A shape
  change keeps the object's position, size and angle.
- scene: the background, redrawn for the new scene from the image's own seed.
Parts (`border`, `core`) are not painted differently from the rest of an object: no edit
toggles them alone, so `toggles(concept)` is False for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nexplain.data import render
from nexplain.data.world import CATEGORIES, SCENES, Spec, make_spec, render_spec
from nexplain.errors import DataError

FIELDS = {"color": "color", "object": "shape", "texture": "texture"}  # category -> Obj field
_EDIT_STREAM = 3  # last seed word of an edit's draws (world.py uses 1 and 2)


def kind_of(concept: str) -> str | None:
    """The world category of a concept name (color, object, texture, scene, part), or None."""
    for category, names in CATEGORIES.items():
        if concept in names:
            return category
    return None


def toggles(concept: str) -> bool:
    return kind_of(concept) in (*FIELDS, "scene")


def present(spec: Spec, concept: str) -> bool:
    kind = kind_of(concept)
    if kind == "scene":
        return spec.scene == concept
    return kind in FIELDS and any(getattr(o, FIELDS[kind]) == concept for o in spec.objects)


def _rng(seed: int, i: int, concept: str) -> np.random.Generator:
    return np.random.default_rng([seed, i, _EDIT_STREAM, sum(map(ord, concept))])


def _with_scene(spec: Spec, scene: str, rng) -> Spec:
    return spec._replace(scene=scene, background=render.background(rng, scene, spec.background.shape[0]))


def remove(spec: Spec, concept: str, rng) -> Spec:
    """`spec` without `concept`: each holder switched to another value of its kind."""
    kind = kind_of(concept)
    others = [v for v in (SCENES if kind == "scene" else CATEGORIES[kind]) if v != concept]
    if kind == "scene":
        return _with_scene(spec, others[rng.integers(len(others))], rng)
    field = FIELDS[kind]
    objects = [o._replace(**{field: others[rng.integers(len(others))]}) if getattr(o, field) == concept else o
               for o in spec.objects]
    return spec._replace(objects=objects)


def add(spec: Spec, concept: str, rng, target: int | None = None) -> Spec:
    """`spec` with `concept`: the scene, or object `target` (default: a random one lacking it)."""
    kind = kind_of(concept)
    if kind == "scene":
        return _with_scene(spec, concept, rng)
    field = FIELDS[kind]
    if target is None:
        lacking = [k for k, o in enumerate(spec.objects) if getattr(o, field) != concept]
        target = lacking[rng.integers(len(lacking))]
    objects = list(spec.objects)
    objects[target] = objects[target]._replace(**{field: concept})
    return spec._replace(objects=objects)


def pair(spec: Spec, concept: str, rng) -> tuple[Spec, Spec]:
    """(with, without) `concept`, one of them `spec` itself."""
    if present(spec, concept):
        return spec, remove(spec, concept, rng)
    return add(spec, concept, rng), spec


class WorldSpecs:
    """The specs of a generated world's images, by image id (= row of index.csv)."""

    def __init__(self, root):
        import json

        root = Path(root)
        try:
            meta = json.loads((root / "world.json").read_text())
            classes = pd.read_csv(root / "image_class.csv")["class"].to_numpy()
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{root}: not a generated world (world.json, image_class.csv): {e}") from e
        self.root, self.seed, self.classes = root, int(meta["seed"]), classes
        self.image_size, self.mask_size = int(meta["image_size"]), int(meta["mask_size"])

    def spec(self, i: int) -> Spec:
        return make_spec(self.seed, int(i), int(self.classes[i]), self.image_size, self.mask_size)

    def rng(self, i: int, concept: str) -> np.random.Generator:
        return _rng(self.seed, int(i), concept)


def sample_test_images(splits: pd.DataFrame, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(every test image id, `n` of them drawn with `seed`), both sorted: the images a rule edits."""
    test = np.sort(splits.loc[splits["split"] == "test", "image_id"].to_numpy())
    return test, np.sort(np.random.default_rng(seed).choice(test, size=min(n, len(test)), replace=False))


def image_of(spec: Spec) -> np.ndarray:
    """(n, n, 3) uint8."""
    return render_spec(spec).image
