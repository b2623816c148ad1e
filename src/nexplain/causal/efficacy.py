"""Causal efficacy: does rendering an explanation's concepts in or out move the unit?

For every concept the renderer can toggle (`edits.toggles`) and every sampled image, a
matched pair: the image with and without the concept, all else fixed. A unit's response is
its activation summary (the spatial mean of its map); the effect of concept c on unit u is

    effect(u, c) = mean over images of [a_u(with c) - a_u(without c)] / sd_u

with sd_u the unit's standard deviation over the sampled originals (0: the unit is dead).
An explanation names concepts with a sign: a formula's literals are + except those after
AND NOT; an LE's, the sign of each weight. Its effect on its unit is the mean signed effect
of the concepts it names that can be rendered; the unit "moves" when that reaches
`min_effect`. Explanations with no renderable concept get NaN (`n_concepts` = 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from nexplain.activations.hooks import Trace
from nexplain.causal.edits import WorldSpecs, image_of, pair, toggles
from nexplain.compositional.formulas import AND_NOT, parse

MIN_EFFECT = 0.2


def pil_batches(transform):
    """A model's PIL transform as `prepare`: uint8 (H, W, 3) images -> the input batch."""
    return lambda images: torch.stack([transform(Image.fromarray(im)) for im in images])


def summaries(module: torch.nn.Module, prepare, layer: str, images: list[np.ndarray],
              batch_size: int = 64) -> np.ndarray:
    """(n, units) spatial-mean activations of `layer` for uint8 (H, W, 3) images; `prepare`
    turns a list of them into the model's input batch."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = prepare(images[s:s + batch_size])
            with Trace(module, layer, stop=True) as t:
                module(x)
            y = t.output.float()
            out.append((y.mean(dim=(2, 3)) if y.ndim == 4 else y.mean(dim=1)).numpy())
    return np.concatenate(out)


def concept_effects(module, prepare, layer: str, specs: WorldSpecs, ids, concepts,
                    progress=None) -> tuple[pd.DataFrame, np.ndarray]:
    """(effects: one row per renderable concept, column per unit; sd per unit) from matched
    pairs on images `ids`."""
    specs_of = {int(i): specs.spec(i) for i in ids}
    originals = summaries(module, prepare, layer, [image_of(s) for s in specs_of.values()])
    sd = originals.std(axis=0)
    rows = {}
    for c in [c for c in concepts if toggles(c)]:
        edited, sign = [], []
        for i, spec in specs_of.items():
            with_c, without = pair(spec, c, specs.rng(i, c))
            edited.append(image_of(without if with_c is spec else with_c))
            sign.append(1.0 if with_c is spec else -1.0)  # original holds c: original - edited
        acts = summaries(module, prepare, layer, edited)
        delta = np.asarray(sign)[:, None] * (originals - acts)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows[c] = np.where(sd > 0, delta.mean(axis=0) / sd, np.nan)
        if progress:
            progress(c)
    return pd.DataFrame.from_dict(rows, orient="index"), sd


def formula_literals(text: str, names) -> list[tuple[str, float]]:
    """(concept, +1) for each literal of a formula, -1 for those after AND NOT."""
    f = parse(text, names)
    return [(names[c], -1.0 if op == AND_NOT else 1.0) for c, op in zip(f.leaves, (None,) + f.ops)]


def signed_concepts(kind: str, row, names) -> list[tuple[str, float]]:
    """(concept, +1/-1) an explanation names; `kind` formula or linear."""
    if kind == "linear":
        return [(c, float(np.sign(w))) for c, w in zip(row["concepts"], row["weights"]) if w != 0]
    return formula_literals(row["formula"], names) if isinstance(row["formula"], str) else []


def explanation_efficacy(method: str, kind: str, table: pd.DataFrame, effects: pd.DataFrame, names,
                         min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """One row per unit of a method's table: its explanation's signed concepts and effect.
    Clustered tables: the unit's highest range."""
    if "cluster" in table and method == "clustered":
        table = table[table["status"] == "ok"].sort_values(["unit", "cluster"]).groupby("unit").tail(1)
    rows = []
    for _, r in table.iterrows():
        dead = bool(r["dead"]) if "dead" in r else r.get("status") == "dead"
        named = [] if dead else signed_concepts(kind, r, names)
        used = [(c, s) for c, s in named if c in effects.index]
        vals = [s * effects.at[c, int(r["unit"])] for c, s in used]
        vals = [v for v in vals if np.isfinite(v)]
        effect = float(np.mean(vals)) if vals else np.nan
        rows.append({"method": method, "unit": int(r["unit"]), "concepts": [c for c, _ in used],
                     "signs": [s for _, s in used], "n_concepts": len(vals), "effect": effect,
                     "moved": bool(np.isfinite(effect) and effect >= min_effect)})
    return pd.DataFrame(rows, columns=["method", "unit", "concepts", "signs", "n_concepts", "effect", "moved"])


def random_baseline(efficacy: pd.DataFrame, effects: pd.DataFrame, seed: int = 0,
                    min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """Method `random`: the same rows with each explanation's concepts replaced by random
    renderable ones (same count, same signs): what naming concepts at random would score."""
    rng = np.random.default_rng(seed)
    pool = list(effects.index)
    rows = []
    for r in efficacy.itertuples():
        picks = [pool[j] for j in rng.choice(len(pool), size=min(r.n_concepts, len(pool)), replace=False)]
        vals = [s * effects.at[c, r.unit] for c, s in zip(picks, r.signs)]
        vals = [v for v in vals if np.isfinite(v)]
        effect = float(np.mean(vals)) if vals else np.nan
        rows.append({"method": "random", "unit": r.unit, "concepts": picks, "signs": list(r.signs),
                     "n_concepts": len(vals), "effect": effect,
                     "moved": bool(np.isfinite(effect) and effect >= min_effect)})
    return pd.DataFrame(rows, columns=efficacy.columns)


def planted_efficacy(units, effects_by_layer: dict[str, pd.DataFrame], names,
                     min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """Per planted unit (nexplain.truth.planted.Planted): the efficacy of its own planted
    concepts, every formula it reads taken as positive evidence except literals after AND NOT."""
    rows = []
    for p in units:
        effects = effects_by_layer[p.layer]
        named = dict(lit for f in p.formulas for lit in formula_literals(f, names))
        used = [(c, s) for c, s in named.items() if c in effects.index]
        vals = [s * effects.at[c, p.unit] for c, s in used if np.isfinite(effects.at[c, p.unit])]
        effect = float(np.mean(vals)) if vals else np.nan
        rows.append({"layer": p.layer, "unit": p.unit, "kind": p.kind, "concepts": [c for c, _ in used],
                     "n_concepts": len(vals), "effect": effect,
                     "moved": bool(np.isfinite(effect) and effect >= min_effect)})
    return pd.DataFrame(rows)
