"""Copy-paste counterfactuals: paste the concepts that explain a class's top units into
images of other classes, and count how often the model's prediction flips to that class.

For class k: its `units` units of largest weight in the linear head that reads the layer;
the positive concepts of their explanations (those the renderer can toggle), most frequent
first, at most one per kind (a colour, a shape, a texture, a scene) so they can all be
pasted together, on one object. Each sampled image of another class that the model gets
right is edited twice: once with those concepts pasted, once with random values of the same
kinds on the same object (the same area). Flip rate: the share of edited images predicted
as k. The gap between the two rates is what the explanations add over any edit that size.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch

from nexplain.causal.edits import WorldSpecs, add, image_of, kind_of, toggles
from nexplain.data.world import CATEGORIES


def predict(module, prepare, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            out.append(module(prepare(images[s:s + batch_size])).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def paste_concepts(weights: np.ndarray, k: int, explained: dict[int, list[str]], units: int) -> list[str]:
    """The concepts to paste for class k: from its top-weighted units' explanations."""
    top = np.argsort(-weights[k], kind="stable")[:units]
    counts = Counter(c for u in top for c in explained.get(int(u), []) if toggles(c))
    chosen, kinds = [], set()
    for c, _ in sorted(counts.items(), key=lambda t: (-t[1], t[0])):
        if kind_of(c) not in kinds:
            chosen.append(c)
            kinds.add(kind_of(c))
    return chosen


def _paste(spec, concepts, rng, target: int):
    for c in concepts:
        spec = add(spec, c, rng, None if kind_of(c) == "scene" else target)
    return spec


def _random_like(concepts, rng) -> list[str]:
    """A random value of each concept's kind."""
    out = []
    for c in concepts:
        values = CATEGORIES[kind_of(c)]
        out.append(values[rng.integers(len(values))])
    return out


def flip_table(module, prepare, specs: WorldSpecs, weights: np.ndarray, explained: dict[int, list[str]],
               ids: np.ndarray, labels: np.ndarray, units: int = 3, images: int = 20, seed: int = 0):
    """(one row per class: concepts pasted, images, flip rates; the gallery's image triples)."""
    rng = np.random.default_rng(seed)
    n_classes = weights.shape[0]
    originals = {int(i): specs.spec(i) for i in ids}
    drawn = {i: image_of(s) for i, s in originals.items()}  # predicted now, shown in the gallery later
    pred = predict(module, prepare, list(drawn.values()))
    right = {i: p for (i, p), y in zip(zip(originals, pred), labels) if p == y}
    rows, gallery = [], []
    for k in range(n_classes):
        concepts = paste_concepts(weights, k, explained, units)
        pool = [i for i, p in right.items() if p != k]
        chosen = [pool[j] for j in rng.permutation(len(pool))[:images]] if concepts else []
        pasted, random = [], []
        for i in chosen:
            spec = originals[i]
            target = int(rng.integers(len(spec.objects)))
            pasted.append(image_of(_paste(spec, concepts, rng, target)))
            random.append(image_of(_paste(spec, _random_like(concepts, rng), rng, target)))
        p_pasted, p_random = predict(module, prepare, pasted), predict(module, prepare, random)
        rows.append({"class": k, "concepts": concepts, "images": len(chosen),
                     "flip_explained": float((p_pasted == k).mean()) if chosen else np.nan,
                     "flip_random": float((p_random == k).mean()) if chosen else np.nan,
                     "changed_explained": float((p_pasted != np.array([right[i] for i in chosen])).mean())
                     if chosen else np.nan})
        if chosen:
            hit = int(np.argmax(p_pasted == k)) if (p_pasted == k).any() else 0
            i = chosen[hit]
            gallery.append((k, drawn[i], int(right[i]), pasted[hit], int(p_pasted[hit]),
                            random[hit], int(p_random[hit])))
    return pd.DataFrame(rows), gallery


def gallery_figure(path, gallery, class_names, concepts_of: dict[int, list[str]]) -> None:
    """One row per class: an original, it with the class's concepts pasted, and with random ones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(gallery))
    fig, axes = plt.subplots(rows, 3, figsize=(6.6, 2.3 * rows), squeeze=False)
    if not gallery:  # the layer does not feed the class head, or nothing explains its units
        for ax in axes[0]:
            ax.axis("off")
        axes[0][1].text(0.5, 0.5, "no copy-paste: this layer does not feed the class head directly",
                        ha="center", va="center", fontsize=8)
    for r, (k, orig, p0, pasted, p1, rand, p2) in enumerate(gallery):
        titles = (f"original: {class_names[p0]}", f"+ {' + '.join(concepts_of[k])}: {class_names[p1]}",
                  f"random paste: {class_names[p2]}")
        for ax, im, t in zip(axes[r], (orig, pasted, rand), titles):
            ax.imshow(im)
            ax.set_title(t, fontsize=6.5, color="darkred" if t.endswith(class_names[k]) and im is not orig else "black")
            ax.axis("off")
    fig.suptitle("Copy-paste: each class's explained concepts pasted into another class's image", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * rows)))  # room for the title
    fig.savefig(path, dpi=200)
    plt.close(fig)
