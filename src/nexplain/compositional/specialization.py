"""Progressive specialization (docs/specialization.md): how many of a layer's activation ranges
explain as a random-init network's would, over the epochs of training.

Clustered CoEx runs on the random init (epoch 0) and on snapshots of training. The random
init's most frequent formulas are its *default formulas*: the ceil(share x units) most
frequent, counted over every unit and range. Its *default prefixes* are the length-2 prefixes
(a formula without its last literal) of its repeated formulas, most frequent first, until
there are as many. Then each range of each epoch is:
- `unspecialized`: its formula is a default formula (equal as formulas, any written order);
- `weak`: otherwise, its prefix is a default prefix (weakly specialized);
- `specialized`: any other formula;
- `unexplained`: no formula (an empty range, or cells no concept touches), and `dead`: a
  constant unit, which has no ranges.
Shares are over the units of a layer for each range index (range 0 = the lowest activations),
so the five shares of a range add up to 1.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from nexplain.compositional.formulas import Formula, parse, to_str

CLASSES = ("unspecialized", "weak", "specialized", "unexplained", "dead")


def _formulas(table: pd.DataFrame, names) -> list[Formula | None]:
    return [parse(f, names) if s == "ok" else None for f, s in zip(table["formula"], table["status"])]


def defaults(random_init: pd.DataFrame, names, share: float = 0.2) -> tuple[list[Formula], list[Formula]]:
    """(default formulas, default prefixes) of one layer's Clustered CoEx table on the random init.

    Ties in frequency keep the order of first appearance (unit, then range), so the choice is
    deterministic."""
    top = math.ceil(share * random_init["unit"].nunique())
    counts = Counter(f for f in _formulas(random_init, names) if f is not None)
    ranked = counts.most_common()  # stable: equal counts stay in first-seen order
    formulas = [f for f, _ in ranked[:top]]
    prefixes = []
    for f, n in ranked:
        if len(prefixes) == top or n < 2:
            break
        if f.left is not None and f.left not in prefixes:
            prefixes.append(f.left)
    return formulas, prefixes


def classify(table: pd.DataFrame, names, formulas: list[Formula], prefixes: list[Formula]) -> pd.Series:
    """Each row's class (CLASSES) against the random init's defaults."""
    default, prefix = set(formulas), set(prefixes)

    def one(f, status):
        if status == "dead":
            return "dead"
        if f is None:
            return "unexplained"
        if f in default:
            return "unspecialized"
        return "weak" if f.left is not None and f.left in prefix else "specialized"

    return pd.Series([one(f, s) for f, s in zip(_formulas(table, names), table["status"])], index=table.index)


def shares(tables: dict[int, pd.DataFrame], names, share: float = 0.2, k: int | None = None) -> pd.DataFrame:
    """One row per (layer, epoch, range): the share of units in each class.

    `tables` {epoch: Clustered CoEx rows with a `layer` column}; epoch 0 is the random init.
    A dead unit counts as dead in every range index; `k` (default: the largest range count
    seen) is the number of range indices."""
    if 0 not in tables:
        raise ValueError("progressive specialization needs the random init (epoch 0)")
    k = k or 1 + max(int(t["cluster"].max()) for t in tables.values())
    rows = []
    for layer in sorted(set(tables[0]["layer"])):
        formulas, prefixes = defaults(tables[0][tables[0]["layer"] == layer], names, share)
        for epoch in sorted(tables):
            t = tables[epoch][tables[epoch]["layer"] == layer]
            cls = classify(t, names, formulas, prefixes)
            units = t["unit"].nunique()
            dead = int(t.loc[cls == "dead", "unit"].nunique())
            for j in range(k):
                at = cls[t["cluster"] == j].value_counts()
                counts = {c: int(at.get(c, 0)) for c in CLASSES[:-1]} | {"dead": dead}
                rows.append({"layer": layer, "epoch": epoch, "range": j, "units": units,
                             **{c: counts[c] / units for c in CLASSES}})
    return pd.DataFrame(rows)


def default_table(tables: dict[int, pd.DataFrame], names, share: float = 0.2) -> pd.DataFrame:
    """The random init's default formulas and prefixes per layer, with their counts on it."""
    rows = []
    for layer in sorted(set(tables[0]["layer"])):
        t = tables[0][tables[0]["layer"] == layer]
        parsed = [f for f in _formulas(t, names) if f is not None]
        counts, prefix_counts = Counter(parsed), Counter(f.left for f in parsed if f.left is not None)
        formulas, prefixes = defaults(t, names, share)
        rows += [{"layer": layer, "kind": "formula", "rank": i, "formula": to_str(f, names), "count": counts[f]}
                 for i, f in enumerate(formulas)]
        rows += [{"layer": layer, "kind": "prefix", "rank": i, "formula": to_str(f, names), "count": prefix_counts[f]}
                 for i, f in enumerate(prefixes)]
    return pd.DataFrame(rows, columns=["layer", "kind", "rank", "formula", "count"]).astype({"rank": np.int32,
                                                                                          "count": np.int32})
