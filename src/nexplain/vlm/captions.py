"""Captions of a Broden-format dataset's images, for training the world's vision-language models.

Objects are read from the pixel labels: every distinct (object, colour, texture, ...) label
tuple under the `object` category's mask is one thing ("a red striped circle"). Image-level
labels (scenes) place them ("... on grass"). Each image gets several seeded variants that
differ in order, wording and which attributes they name, so the text tower learns the words
rather than one template. Single-concept prompts ("red", "a striped pattern") come from the
image's present concepts, so zero-shot concept presence works with the bare concept name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

ANCHOR = "object"          # the category whose pixels make a thing
SKIP = ("part",)           # categories never named in a caption (every object has parts)
ATTRIBUTE_ORDER = ("color", "material", "texture")  # adjective order: "red striped circle"
MIN_PIXELS = 2             # a label tuple on fewer mask cells is a boundary artefact

_PREFIX = ("", "", "a photo of ", "an image of ", "a picture showing ")
_SCENE = ("{} on {}", "{} in a {} scene", "a {1} scene with {0}", "{} with a {} background", "{}")
_PROMPT = {  # category -> single-concept templates besides the bare name
    "color": ("something {}", "a {} object"),
    "texture": ("a {} pattern", "something {}"),
    "object": ("a {}", "a {} shape"),
    "scene": ("a {} scene", "{} in the background"),
}


def words(name: str) -> str:
    return name.replace("_", " ")


def image_things(seg: dict, names: dict[int, str]) -> tuple[list[dict], list[str]]:
    """(things: {category: name} per distinct label tuple under the anchor mask, image-level
    names) from `BrodenDataset.segmentation` output; `names` maps label numbers to names."""
    scene = [names[n] for cat, items in seg.items() if cat not in SKIP
             for n in items if isinstance(n, int) and n in names]
    if ANCHOR not in seg or isinstance(seg[ANCHOR][0], int):
        return [], scene
    cats = [ANCHOR] + [c for c in ATTRIBUTE_ORDER if c in seg and not isinstance(seg[c][0], int)]
    stack = np.stack([seg[c][0].ravel() for c in cats], axis=1)
    stack = stack[stack[:, 0] > 0]
    tuples, counts = np.unique(stack, axis=0, return_counts=True)
    things = [{c: names[int(v)] for c, v in zip(cats, row) if v > 0 and int(v) in names}
              for row, n in zip(tuples, counts) if n >= MIN_PIXELS]
    return [t for t in things if ANCHOR in t], scene


def _phrase(rng, thing: dict) -> str:
    adj = [words(thing[c]) for c in ATTRIBUTE_ORDER if c in thing and rng.random() < 0.8]
    return " ".join(["a"] + adj + [words(thing[ANCHOR])])


def caption(rng, things: list[dict], scene: list[str]) -> str:
    """One caption: the things in random order with some attributes left out, then the scene."""
    parts = [_phrase(rng, things[i]) for i in rng.permutation(len(things))]
    objs = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else "nothing"
    text = objs
    if scene:
        text = _SCENE[rng.integers(len(_SCENE))].format(objs, words(scene[rng.integers(len(scene))]))
    return _PREFIX[rng.integers(len(_PREFIX))] + text


def prompt(rng, name: str, category: str | None) -> str:
    """A single-concept prompt: the bare name half of the time (as zero-shot scoring asks)."""
    options = _PROMPT.get(category or "", ())
    if not options or rng.random() < 0.5:
        return words(name)
    return options[rng.integers(len(options))].format(words(name))


def caption_table(ds, presence: pd.DataFrame, variants: int = 8, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """Per image: `captions` (`variants` strings), `concepts` (present concepts, presence
    column names) and `prompts` (one single-concept prompt each). `ds` an opened
    Broden-format dataset; `presence` its concept presence table (`nexplain.data.concepts`)."""
    from nexplain.data.concepts import column_names

    names = dict(zip(ds.concepts["number"].astype(int), ds.concepts["name"]))
    text = dict(zip(column_names(ds.concepts), zip(ds.concepts["name"], ds.concepts["category"])))
    cols = [c for c in presence.columns if c != "image_id"]
    present = presence[cols].to_numpy() > 0
    rows = []
    for k, image_id in enumerate(tqdm(presence["image_id"].to_numpy(), desc="captions", disable=not progress)):
        things, scene = image_things(ds.segmentation(int(image_id)), names)
        rng = np.random.default_rng([seed, int(image_id)])
        have = [cols[j] for j in np.flatnonzero(present[k])]
        rows.append((int(image_id), [caption(rng, things, scene) for _ in range(variants)], have,
                     [prompt(rng, *text[c]) for c in have]))
    return pd.DataFrame(rows, columns=["image_id", "captions", "concepts", "prompts"])
