"""Planted units: what chosen channels of the planted model are trained to compute.

Each unit's planted function is a map over the concept-mask grid, built from the
world's pixel concept masks:

- single, formula:  1 where the formula holds (the project's formula syntax), else 0;
- graded:           `levels` [{formula, level}]: the level of the highest level whose
                    formula holds (Clustered CoEx's activation ranges);
- linear:           `weights` {concept: w}: sum of w over the concepts present anywhere
                    in the image, constant over the image (LE's image-level sums);
- polysemantic:     `parts` [formula, ...]: 1 where any part holds; each image belongs to
                    the first part present in it (PURE's circuits).

Values stay in [0, 1], so a planted model's targets store as uint8 (x 255).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexplain.compositional import formulas
from nexplain.errors import ConfigError

KINDS = ("single", "formula", "graded", "linear", "polysemantic")


@dataclass(frozen=True)
class Planted:
    layer: str
    unit: int
    kind: str
    formula: str | None = None
    levels: tuple[tuple[str, float], ...] = ()
    weights: tuple[tuple[str, float], ...] = ()
    parts: tuple[str, ...] = ()

    @property
    def formulas(self) -> list[str]:
        """Every formula the planted function reads (weights' concepts are single-concept formulas)."""
        if self.kind in ("single", "formula"):
            return [self.formula]
        if self.kind == "graded":
            return [f for f, _ in self.levels]
        if self.kind == "linear":
            return [c for c, _ in self.weights]
        return list(self.parts)

    def concepts(self, names) -> set[str]:
        """The concept names the planted function depends on."""
        return set().union(*(formula_concepts(f, names) for f in self.formulas))


def parse_units(specs, names, where: str = "truth.units") -> list[Planted]:
    """Planted units from the config's list, with every formula and concept checked against `names`."""
    out, seen = [], set()
    for i, s in enumerate(specs):
        key = f"{where}.{i}"
        kind = s.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"key '{key}.kind': {kind!r} is not a planted kind; valid choices: {', '.join(KINDS)}")
        if (s["layer"], s["unit"]) in seen:
            raise ConfigError(f"key '{key}': unit {s['unit']} of {s['layer']} is planted twice")
        seen.add((s["layer"], s["unit"]))
        p = Planted(layer=s["layer"], unit=int(s["unit"]), kind=kind, formula=s.get("formula"),
                    levels=tuple((lv["formula"], float(lv["level"])) for lv in s.get("levels", [])),
                    weights=tuple((c, float(w)) for c, w in (s.get("weights") or {}).items()),
                    parts=tuple(s.get("parts", [])))
        _check(p, key, names)
        out.append(p)
    return out


def _check(p: Planted, key: str, names) -> None:
    need = {"single": "formula", "formula": "formula", "graded": "levels", "linear": "weights",
            "polysemantic": "parts"}[p.kind]
    if not p.formulas or (p.kind == "polysemantic" and len(p.parts) < 2):
        raise ConfigError(f"key '{key}': a {p.kind} unit needs '{need}'" +
                          (" with two or more formulas" if p.kind == "polysemantic" else ""))
    for f in p.formulas:
        try:
            parsed = formulas.parse(f, names)
        except ValueError as e:
            raise ConfigError(f"key '{key}': cannot read formula {f!r}: {e}; concepts: {', '.join(names)}") from None
        if p.kind == "single" and len(parsed) != 1:
            raise ConfigError(f"key '{key}': a single unit names one concept, got {f!r}")
    values = [lv for _, lv in p.levels] + [w for _, w in p.weights]
    if any(not 0 < v <= 1 for v in values) or sum(w for _, w in p.weights) > 1 + 1e-9:
        raise ConfigError(f"key '{key}': levels and weights lie in (0, 1] and weights sum to at most 1, "
                          f"so the planted function stays in [0, 1]")


def formula_concepts(text: str, names) -> set[str]:
    """The concept names a formula names."""
    return {names[c] for c in formulas.concepts(formulas.parse(text, names))}


def formula_cells(text: str, store, names) -> np.ndarray:
    """Bool (N, H, W): where the formula holds on every image of the store."""
    return formulas.evaluate(formulas.parse(text, names), store).to_dense()


def planted_cells(p: Planted, store, names) -> np.ndarray:
    """Float32 (N, H, W) planted function on the concept-mask grid."""
    if p.kind in ("single", "formula"):
        return formula_cells(p.formula, store, names).astype(np.float32)
    out = np.zeros((store.n_images, *store.shape), np.float32)
    if p.kind == "graded":
        for f, level in sorted(p.levels, key=lambda x: x[1]):  # the highest level wins where formulas meet
            out[formula_cells(f, store, names)] = level
    elif p.kind == "linear":
        for c, w in p.weights:
            out += w * formula_cells(c, store, names).any((1, 2))[:, None, None]
    else:
        for f in p.parts:
            out[formula_cells(f, store, names)] = 1.0
    return out


def image_parts(p: Planted, store, names) -> np.ndarray:
    """Int (N,): the index of each image's part (the first part present in it), -1 for none."""
    out = np.full(store.n_images, -1, np.int64)
    for j, f in reversed(list(enumerate(p.parts))):
        out[formula_cells(f, store, names).any((1, 2))] = j
    return out


def planted_targets(units: list[Planted], store, names) -> np.ndarray:
    """Uint8 (N, K, H, W): every unit's planted function x 255, the planted model's training targets."""
    out = np.empty((store.n_images, len(units), *store.shape), np.uint8)
    for k, p in enumerate(units):
        out[:, k] = np.round(planted_cells(p, store, names) * 255).astype(np.uint8)
    return out


def planted_table(units: list[Planted]) -> pd.DataFrame:
    """planted.parquet: unit, layer, kind, formula, weights and levels (JSON), parts."""
    return pd.DataFrame({
        "layer": [p.layer for p in units], "unit": np.array([p.unit for p in units], np.int32),
        "kind": [p.kind for p in units], "formula": [p.formula for p in units],
        "levels": [json.dumps([{"formula": f, "level": lv} for f, lv in p.levels]) for p in units],
        "weights": [json.dumps(dict(p.weights)) for p in units],
        "parts": [list(p.parts) for p in units],
    })
