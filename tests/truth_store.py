"""A small concept store for the ground-truth tests: two 4 x 4 objects per 8 x 8 image, each red or
blue and a circle or a square, on a snow, lava or plain scene (image-level)."""

import numpy as np

from nexplain.compositional.masks import ConceptStore

NAMES = ["red", "blue", "circle", "square", "snow", "lava"]
N, S = 400, 8


def make_store(seed: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((len(NAMES), N, S, S), bool)
    for i in range(N):
        for box in ((slice(0, 4), slice(0, 4)), (slice(4, 8), slice(4, 8))):
            masks[rng.integers(2), i][box] = True          # red or blue
            masks[2 + rng.integers(2), i][box] = True      # circle or square
        scene = rng.integers(3)
        if scene < 2:
            masks[4 + scene, i] = True
    image_level = np.zeros((len(NAMES), N), bool)
    image_level[4:] = masks[4:].any((2, 3))
    return ConceptStore.from_dense(masks, image_level), masks


def splits(seed: int = 0):
    names = np.random.default_rng(seed).choice(["train", "val", "test"], N, p=[0.6, 0.2, 0.2])
    return {k: names == k for k in ("train", "val", "test")}
