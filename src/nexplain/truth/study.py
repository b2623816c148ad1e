"""The ground-truth study end to end, as the `truth` rules call it: explain the planted units of a
variant of the network with every method, then grade every variant against the planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from nexplain.truth import grade
from nexplain.truth.explain import formula_tables, linear_tables, pure_tables, unit_maps
from nexplain.truth.planted import Planted


def channels(units: list[Planted]) -> dict[str, list[tuple[int, int]]]:
    """{layer: [(index of the unit's target, channel)]}: what `Planting` pulls."""
    out: dict[str, list[tuple[int, int]]] = {}
    for k, p in enumerate(units):
        out.setdefault(p.layer, []).append((k, p.unit))
    return out


def by_layer(units: list[Planted]) -> dict[str, list[int]]:
    """{layer: its planted channels, in the config's order}."""
    return {layer: [c for _, c in pairs] for layer, pairs in channels(units).items()}


def check_channels(module: torch.nn.Module, units: list[Planted], size: int) -> None:
    """Every planted unit is a channel its layer has (one forward pass of a blank image)."""
    from nexplain.activations.hooks import TraceDict
    from nexplain.errors import ConfigError

    layers = by_layer(units)
    with torch.inference_mode(), TraceDict(module, list(layers), stop=True) as td:
        module.eval()(torch.zeros(1, 3, size, size))
    for i, p in enumerate(units):
        n = td[p.layer].output.shape[1]
        if p.unit >= n:
            raise ConfigError(f"key 'truth.units.{i}.unit': {p.layer} has channels 0..{n - 1}, not {p.unit}")


def train_planted(table, recipe: dict, units, store, names, weight: float, threads: int = 2, compute=None,
                  progress: bool = True):
    """(model, metrics): `recipe` (a model block: arch, input, train) trained on `table` with the
    planting loss of `units` (`nexplain.truth.planted.Planted`) at `weight` beside the class loss."""
    import torchvision

    from nexplain.models.train import train_classifier
    from nexplain.truth.plant import Planting
    from nexplain.truth.planted import planted_targets

    m, t = recipe, recipe["train"]
    check_channels(torchvision.models.get_model(m["arch"], weights=None), units, m["input"]["size"])
    plant = Planting(torch.from_numpy(planted_targets(units, store, names)), channels(units), weight)
    return train_classifier(
        table, arch=m["arch"], image_size=m["input"]["size"], mean=m["input"]["mean"], std=m["input"]["std"],
        epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], weight_decay=t["weight_decay"],
        seed=t["seed"], low_res=t.get("low_res"), threads=threads, compute=compute, plant=plant, progress=progress)


def variant_network(variant: str, base: dict, num_classes: int, checkpoint, random_seed: int) -> torch.nn.Module:
    """The planted model (planted, shuffled) or the same architecture with seeded random weights."""
    if variant != "random":
        from nexplain.models.load import load_model

        return load_model({"source": "checkpoint", "arch": base["arch"], "path": checkpoint,
                           "num_classes": num_classes, "input": base["input"]}).module
    import torchvision

    torch.manual_seed(random_seed)
    return torchvision.models.get_model(base["arch"], weights=None, num_classes=num_classes).eval()


def split_masks(table, n: int) -> dict[str, np.ndarray]:
    """{train, val, test}: bool per image of the dataset's own split, the one the planted model trained on."""
    out = {}
    for s in ("train", "val", "test"):
        out[s] = np.zeros(n, bool)
        out[s][table.split_ids(s)] = True
    return out


def explain_variant(variant: str, module, images: torch.Tensor, normalize, units: list[Planted], store, names,
                    matrices: dict, splits: dict, settings: dict, shuffle_seed: int):
    """(maps {layer: (N, U, h, w)}, {method: table}, seconds table) of one variant.

    `images` uint8 (N, 3, H, W) in image-id order; `matrices[source]` = (P (N, C), names);
    `settings`: {"formula": {method: Settings fields}, "linear": LinearSettings fields,
    "pure": {layer, earlier, top, k, seed}}."""
    layers = by_layer(units)
    maps = unit_maps(module, images, normalize, layers)
    order = np.arange(len(images))
    if variant == "shuffled":  # image i gets image perm[i]'s activations: labels shuffled against them
        order = np.random.default_rng(shuffle_seed).permutation(len(images))
        maps = {layer: m[order] for layer, m in maps.items()}
    fit = ~splits["test"]  # LE fits on train and val, PURE's top images come from them; all are graded on test
    tables, seconds = formula_tables(maps, layers, store, names, settings["formula"])
    pooled = {layer: m.mean((2, 3)) for layer, m in maps.items()}
    le, le_seconds = linear_tables(pooled, layers, matrices, splits, settings["linear"])
    tables.update(le)
    seconds += le_seconds
    ps = settings["pure"]
    if ps["layer"] in layers:
        peak = maps[ps["layer"]].reshape(*maps[ps["layer"]].shape[:2], -1).max(2)
        load = lambda ids: normalize(images[order[ids]].float())  # the images the activations came from
        tables["pure"], pure_seconds = pure_tables(module, load, peak, fit, layers[ps["layer"]], ps["layer"],
                                                   ps["earlier"], *matrices["label"], ps["top"], ps["k"], ps["seed"])
        seconds += pure_seconds
    return maps, tables, pd.DataFrame(seconds)


def grade_variants(units: list[Planted], store, names, splits: dict, matrices: dict,
                   variants: dict[str, tuple[dict, dict, pd.DataFrame]], pure: dict):
    """(grades, planting checks) over every variant: `variants[name]` = (maps, tables, seconds);
    `pure` = {layer, earlier}: PURE explains the units of `layer`, graded on its last earlier layer."""
    rows, checks = [], []
    layers = by_layer(units)
    for p in units:
        t = grade.UnitTruth(p, store, names, splits["test"])
        for variant, (maps, tables, seconds) in variants.items():
            unit_maps = maps[p.layer][:, layers[p.layer].index(p.unit)]
            if variant == "planted":
                checks.append(grade.planting_check(t, unit_maps))
            for method, table in tables.items():
                if method == "pure" and p.layer != pure["layer"]:
                    continue
                on = pure["earlier"][-1] if method == "pure" else p.layer  # PURE's rows name the circuit's layer
                g = grade.grade_unit(t, method, table[(table["unit"] == p.unit) & (table["layer"] == on)],
                                     splits, matrices, unit_maps)
                sec = seconds[(seconds["method"] == method) & (seconds["layer"] == p.layer) & (seconds["unit"] == p.unit)]
                rows.append({"variant": variant, "method": method, "layer": p.layer, "unit": p.unit, "kind": p.kind,
                             **g, "seconds": float(sec["seconds"].sum())})
        rows.append({"variant": "constant", "method": "constant", "layer": p.layer, "unit": p.unit, "kind": p.kind,
                     **grade.grade_unit(t, "constant", None, splits, matrices), "seconds": 0.0})
    columns = ["variant", "method", "layer", "unit", "kind", "explanation", *grade.GRADES]
    return pd.DataFrame(rows)[columns], pd.DataFrame(checks)
