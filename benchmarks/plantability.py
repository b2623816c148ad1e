"""Which concepts can be planted at the truth recipe's budget: every pixel concept of the world planted
as a `single` unit in each layer of `truth.units`, one planted model, the planting check per concept.

    python benchmarks/plantability.py [--results results] [--config config.yaml]

Reads a default run's world, concept masks and splits (run `make run` first); trains one model
(`truth.train` over the base recipe, `truth.weight`), about 15 minutes on 2 cores; writes
benchmarks/plantability.json and prints the table. config.yaml's planted functions are built from
the concepts that pass here (docs/truth.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from default_run import ROOT, _cpu
from nexplain.compositional.store import open_store
from nexplain.config import load_config, truth_recipe
from nexplain.data import world
from nexplain.data.folder import open_dataset
from nexplain.models.train import decode_images, normalizer
from nexplain.truth import grade, study
from nexplain.truth.explain import unit_maps
from nexplain.truth.planted import parse_units

OUT = ROOT / "benchmarks" / "plantability.json"
CONCEPTS = {"colour": list(world.COLORS), "shape": list(world.SHAPES), "texture": list(world.TEXTURES),
            "part": list(world.PARTS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = ap.parse_args()
    config = load_config(args.config)
    recipe, weight = truth_recipe(config), config["truth"]["weight"]
    data = recipe["train"]["dataset"]
    store, names = open_store(args.results / data / "concepts", args.results / data / "geometry.npz")
    category = {c: cat for cat, cs in CONCEPTS.items() for c in cs}
    layers = sorted({u["layer"] for u in config["truth"]["units"]})
    units = parse_units([{"layer": layer, "unit": i, "kind": "single", "formula": c}  # channel i plants concept i
                         for layer in layers for i, c in enumerate(category)], names)
    table = open_dataset("broden", args.results / "datasets" / data)
    t0 = time.perf_counter()
    model, metrics = study.train_planted(table, recipe, units, store, names, weight, progress=False)
    seconds = time.perf_counter() - t0
    splits = study.split_masks(table, store.n_images)
    images = decode_images(table, np.arange(store.n_images), recipe["input"]["size"])
    maps = unit_maps(model, images, normalizer(recipe["input"]["mean"], recipe["input"]["std"]), study.by_layer(units))
    checks = pd.DataFrame([{**grade.planting_check(grade.UnitTruth(p, store, names, splits["test"]), maps[p.layer][:, p.unit]),
                            "category": category[p.formula], "concept": p.formula} for p in units])
    record = {"date": datetime.date.today().isoformat(), "machine": _cpu(),
              "command": "python benchmarks/plantability.py", "train_s": round(seconds),
              "recipe": recipe["train"], "weight": weight, "test_accuracy": metrics["test_accuracy"],
              "checks": json.loads(checks.round(3).to_json(orient="records"))}
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    wide = checks.pivot_table(index=["category", "concept"], columns="layer", values="corr", sort=False)
    print(f"test accuracy {metrics['test_accuracy']:.3f}, trained in {seconds:.0f} s; corr on test:")
    print(wide.round(2).to_markdown())


if __name__ == "__main__":
    main()
