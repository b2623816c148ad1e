"""Config validation: the JSON schema, plus the cross-references a schema cannot express."""

from __future__ import annotations

import functools
import math
from importlib import resources

import jsonschema
import yaml

from nexplain.errors import ConfigError

BRODEN_KINDS = ("world", "broden")  # kinds that carry pixel concept masks


@functools.cache
def schema() -> dict:
    text = resources.files("nexplain").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _deepest(error):
    # if/then branches nest the useful error inside `context`; report the most specific one
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def validate_config(config: dict, source: str = "config") -> dict:
    """Raise ConfigError naming the first bad key and what was expected; return config."""
    validator = jsonschema.Draft202012Validator(schema())
    # a wrong type explains the other errors at the same key, so it comes first
    errors = sorted((_deepest(e) for e in validator.iter_errors(config)),
                    key=lambda e: (list(map(str, e.absolute_path)), e.validator != "type", e.message))
    if errors:
        e = errors[0]
        raise ConfigError(f"{source}: key '{_key(e.absolute_path)}': {e.message}")
    _check_references(config, source)
    return config


def _check_references(config: dict, source: str) -> None:
    datasets, models = config["datasets"], config["models"]
    for name, ds in datasets.items():
        if ds["kind"] == "world":
            total = sum(ds["generate"]["splits"].values())
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ConfigError(f"{source}: key 'datasets.{name}.generate.splits': fractions sum to {total:g}, expected 1")
    for name, m in models.items():
        if m["source"] == "train":
            _must_name(m["train"]["dataset"], datasets, f"models.{name}.train.dataset", source)
    vlms = config.get("vlms") or {}
    for name, v in vlms.items():
        if v["source"] == "train":
            key = f"vlms.{name}.train.dataset"
            _must_name(v["train"]["dataset"], datasets, key, source)
            _needs_labels(datasets, v["train"]["dataset"], key, "captions", source)
    matrices = ["label", *vlms]  # concept matrices: labels, or any VLM
    for i, t in enumerate(config["extract"]["targets"]):
        _must_name(t["model"], models, f"extract.targets.{i}.model", source)
        _must_name(t["dataset"], datasets, f"extract.targets.{i}.dataset", source)
    for block, needs in (("explain", "masks"), ("linear", "labels")):
        for i, t in enumerate((config.get(block) or {}).get("targets", [])):
            key = f"{block}.targets.{i}"
            _must_name(t["model"], models, f"{key}.model", source)
            _must_name(t["dataset"], datasets, f"{key}.dataset", source)
            _needs_labels(datasets, t["dataset"], f"{key}.dataset", f"concept {needs}", source)
            for s in t.get("sources", []):
                _must_name(s, matrices, f"{key}.sources", source)
                _needs_concept_set(datasets, t["dataset"], s, f"{key}.sources", source)
    lin = config.get("linear") or {}
    if lin.get("targets") and not math.isclose(sum(lin["split"]["fractions"]), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{source}: key 'linear.split.fractions': fractions sum to "
                          f"{sum(lin['split']['fractions']):g}, expected 1")
    for t in lin.get("targets", []):
        for s in lin["simulate"]["simulators"]:
            _must_name(s, matrices, "linear.simulate.simulators", source)
            _needs_concept_set(datasets, t["dataset"], s, "linear.simulate.simulators", source)

    pure = config.get("pure") or {}
    for i, t in enumerate(pure.get("targets", [])):
        key = f"pure.targets.{i}"
        _must_name(t["model"], models, f"{key}.model", source)
        _must_name(t["dataset"], datasets, f"{key}.dataset", source)
        extracted = {layer for e in config["extract"]["targets"] if (e["model"], e["dataset"]) == (t["model"], t["dataset"])
                     for layer in e["layers"]}
        _must_name(t["layer"], sorted(extracted), f"{key}.layer", source)  # its maps rank the top images
    if pure.get("targets"):
        _must_name(pure["reference"], list(vlms), "pure.reference", source)
        if pure.get("ceiling") is not None:
            _must_name(pure["ceiling"], list(vlms), "pure.ceiling", source)


def _needs_labels(datasets: dict, name: str, key: str, what: str, source: str) -> None:
    if datasets[name]["kind"] not in BRODEN_KINDS:
        raise ConfigError(f"{source}: key '{key}': '{name}' has no {what} (kind {datasets[name]['kind']}); "
                          f"use a dataset of kind {' or '.join(BRODEN_KINDS)}")


def _needs_concept_set(datasets: dict, name: str, matrix: str, key: str, source: str) -> None:
    if matrix != "label" and "concept_set" not in datasets[name]:
        raise ConfigError(f"{source}: key '{key}': the VLM concept matrix '{matrix}' needs "
                          f"'datasets.{name}.concept_set' (a concept list file, one a line)")


def _must_name(value: str, table, key: str, source: str) -> None:
    if value not in table:
        raise ConfigError(f"{source}: key '{key}': '{value}' is not defined; valid choices: {', '.join(table)}")


MLFLOW_DEFAULTS = {"enabled": True, "tracking_uri": None, "experiment": "nexplain"}


def mlflow_settings(config: dict) -> dict:
    """The `mlflow:` block with its defaults filled in (the whole block is optional)."""
    return {**MLFLOW_DEFAULTS, **(config.get("mlflow") or {})}


def load_config(path) -> dict:
    """Read and validate a YAML config file (used by the CLI and tests; Snakemake reads its own)."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate_config(config, source=str(path))
