"""Config validation: the JSON schema, plus the cross-references a schema cannot express."""

from __future__ import annotations

import functools
import itertools
import math
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from nexplain.errors import ConfigError, DataError, ModelError

BRODEN_KINDS = ("world", "broden")  # kinds that carry pixel concept masks
SPLITS = ("train", "val", "test")   # the order of linear.split.fractions


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
        raise ConfigError(_one_line(f"{source}: key '{_key(e.absolute_path)}': {e.message}{_explained(e)}"))
    _check_references(config, source)
    _image_towers(config)
    return config


def _image_towers(config: dict) -> None:
    """`source: vlm` models become the open_clip spec of that VLM's image tower, in place: a VLM
    trained here is read from its checkpoint under results/, which the model step then needs."""
    vlms = config.get("vlms") or {}
    for name, m in config["models"].items():
        if m["source"] != "vlm":
            continue
        v = vlms[m["vlm"]]
        if v["source"] == "train":
            ckpt = f"{config['results']}/vlms/{m['vlm']}/open_clip_model.safetensors"
            config["models"][name] = {"source": "open_clip", "name": v["arch"], "pretrained": ckpt, "vlm": m["vlm"]}
        else:
            config["models"][name] = {"source": "open_clip", "name": v["name"], "pretrained": v.get("pretrained"),
                                      "vlm": m["vlm"]}


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")  # a newline inside a value stays visible


def _explained(error) -> str:
    """What jsonschema's message leaves out: the keys a block takes, or why a bound exists."""
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        return f"; valid keys: {', '.join(_keys(error.schema))}"
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f" ({description})" if description else ""


def _keys(node: dict) -> list[str]:
    """The properties a schema node declares itself or through `$ref` and `allOf`."""
    out = []
    if node.get("$ref", "").startswith("#/$defs/"):  # the shared keys first, as the configs write them
        out += _keys(schema()["$defs"][node["$ref"].rpartition("/")[2]])
    out += list(node.get("properties", {}))
    for sub in node.get("allOf", []):
        out += _keys(sub)
    return list(dict.fromkeys(out))


def _check_references(config: dict, source: str) -> None:
    datasets, models = config["datasets"], config["models"]
    for name, ds in datasets.items():
        if ds["kind"] == "world":
            g = ds["generate"]
            total = sum(g["splits"].values())
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ConfigError(f"{source}: key 'datasets.{name}.generate.splits': fractions sum to {total:g}, expected 1")
            _nonempty_splits({s: g["splits"][s] for s in SPLITS}, g["n_images"],
                             f"datasets.{name}.generate.splits", "", source)
    for name, m in models.items():
        if m["source"] == "train":
            _must_name(m["train"]["dataset"], datasets, f"models.{name}.train.dataset", source)
            _check_low_res(m["train"], f"models.{name}.train", source)
    vlms = config.get("vlms") or {}
    for name, m in models.items():
        if m["source"] == "vlm":
            _must_name(m["vlm"], vlms, f"models.{name}.vlm", source)
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
    trained_vlms = [v for v, spec in vlms.items() if spec["source"] == "train"]
    if trained_vlms and not lin:  # they train on, and are evaluated on, the linear split
        raise ConfigError(f"{source}: key 'linear': trained VLMs ({', '.join(trained_vlms)}) use the split "
                          f"'linear.split'; add a linear block (targets may be [])")
    if lin and not math.isclose(sum(lin["split"]["fractions"]), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{source}: key 'linear.split.fractions': fractions sum to "
                          f"{sum(lin['split']['fractions']):g}, expected 1")
    split_users = {t["dataset"] for t in lin.get("targets", [])} | {vlms[v]["train"]["dataset"] for v in trained_vlms}
    for name in sorted(split_users):
        if datasets[name]["kind"] == "world":  # other datasets' sizes are known once they are read
            _nonempty_splits(dict(zip(SPLITS, lin["split"]["fractions"])), datasets[name]["generate"]["n_images"],
                             "linear.split.fractions", f" of dataset '{name}'", source)
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
    _check_truth(config, matrices, source)
    _check_specialization(config, source)


def _check_specialization(config: dict, source: str) -> None:
    """Each followed model is trained here, with its random init among its snapshots, on a dataset with masks."""
    spec = config.get("specialization") or {}
    if not spec.get("enabled"):
        return
    datasets, models = config["datasets"], config["models"]
    for i, t in enumerate(spec["targets"]):
        key = f"specialization.targets.{i}"
        _must_name(t["model"], models, f"{key}.model", source)
        _must_name(t["dataset"], datasets, f"{key}.dataset", source)
        _needs_labels(datasets, t["dataset"], f"{key}.dataset", "concept masks", source)
        m = models[t["model"]]
        if m["source"] != "train":
            raise ConfigError(f"{source}: key '{key}.model': '{t['model']}' has source '{m['source']}'; "
                              f"specialization follows a model trained here (source: train)")
        snapshots, epochs = m["train"].get("snapshots", []), m["train"]["epochs"]
        if 0 not in snapshots:
            raise ConfigError(f"{source}: key 'models.{t['model']}.train.snapshots': {snapshots}; specialization "
                              f"needs the random init, epoch 0, among them")
        late = [e for e in snapshots if e > epochs]
        if late:
            raise ConfigError(f"{source}: key 'models.{t['model']}.train.snapshots': epochs {late} are past "
                              f"the last of {epochs}")


def _check_low_res(train: dict, key: str, source: str) -> None:
    low, epochs = train.get("low_res"), train["epochs"]
    if low and low["epochs"] >= epochs:  # the network must end at the size it is explained at
        raise ConfigError(f"{source}: key '{key}.low_res.epochs': {low['epochs']} of "
                          f"{epochs} epochs at low resolution; at least the last epoch must be full size")


def truth_recipe(config: dict) -> dict:
    """The planted model's recipe: the base model's, with `truth.train` (epochs, low_res) over its training."""
    truth = config["truth"]
    base = config["models"][truth["base"]]
    train = {k: v for k, v in base["train"].items() if k != "snapshots"}  # the planted model keeps none
    return {**base, "train": {**train, **(truth.get("train") or {})}}


def _check_truth(config: dict, matrices, source: str) -> None:
    """The planted model copies a trained model of a dataset with concept masks and classes."""
    truth = config.get("truth")
    if not truth:
        return
    models, datasets = config["models"], config["datasets"]
    _must_name(truth["base"], list(models), "truth.base", source)
    base = models[truth["base"]]
    if base["source"] != "train":
        raise ConfigError(f"{source}: key 'truth.base': model '{truth['base']}' is not trained here "
                          f"(source {base['source']}); the planted model copies a training recipe")
    _check_low_res(truth_recipe(config)["train"], "truth.train", source)
    dataset = base["train"]["dataset"]
    _needs_labels(datasets, dataset, "truth.base", "concept masks to plant from", source)
    for s in truth["sources"]:
        _must_name(s, matrices, "truth.sources", source)
        _needs_concept_set(datasets, dataset, s, "truth.sources", source)
    if not (config.get("linear") or {}).get("concept_filter") or not config.get("explain") or not config.get("pure"):
        raise ConfigError(f"{source}: key 'truth': the study runs every method with the settings of "
                          f"'explain', 'linear' and 'pure'; the config lacks one of those blocks")
    if truth["pure"]["layer"] not in {u["layer"] for u in truth["units"]}:
        raise ConfigError(f"{source}: key 'truth.pure.layer': no planted unit is in {truth['pure']['layer']!r}")


def split_sizes(fractions: list[float], n: int) -> list[int]:
    """Images per split, cut as the world (`data.world`) and `splits.make_splits` cut them:
    at the rounded cumulative fractions, the last cut at n."""
    cuts = [round(c * n) for c in itertools.accumulate(fractions)]
    cuts[-1] = n
    return [b - a for a, b in zip([0, *cuts], cuts)]


def _nonempty_splits(splits: dict, n: int, key: str, what: str, source: str) -> None:
    for (split, fraction), size in zip(splits.items(), split_sizes(list(splits.values()), n)):
        if size < 1:  # an empty split leaves its metric undefined (None), which crashed a job
            raise ConfigError(f"{source}: key '{key}': the {split} split{what} gets {size} of {n} images "
                              f"(fraction {fraction:g}); every split needs one: raise its fraction or n_images")


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
        raise ConfigError(f"{source}: key '{key}': {value!r} is not defined; valid choices: {', '.join(table)}")


def check_plan(config: dict, source: str = "config", workdir=".") -> None:
    """What the schema cannot see, checked before any job runs: concept-set files (relative to
    `workdir`, as the rules read them) and every model's architecture and targeted layers.
    Imports torch, so it is apart from `validate_config`; call it on a validated config."""
    from nexplain.models.layers import skeleton, unknown_layer
    from nexplain.vlm.vlm import read_concept_set  # the reader the VLM concept matrix uses

    for name, ds in config["datasets"].items():
        if "concept_set" in ds:
            path = Path(workdir) / ds["concept_set"]
            try:
                read_concept_set(path)
            except DataError as e:
                raise ConfigError(_one_line(f"{source}: key 'datasets.{name}.concept_set': {e}")) from None
    modules = {}
    for name, spec in config["models"].items():
        key = f"models.{name}.{'name' if spec['source'] == 'open_clip' else 'arch'}"
        try:
            modules[name] = skeleton(spec)
        except ModelError as e:
            raise ConfigError(_one_line(f"{source}: key '{key}': {e}")) from None
    for key, model, layer in _layer_targets(config):
        if modules[model] is None:  # an hf-hub model: only its file knows its layers
            continue
        reason = unknown_layer(modules[model], layer)
        if reason:
            raise ConfigError(_one_line(f"{source}: key '{key}': model '{model}': {reason}"))


def _layer_targets(config: dict):
    """(key, model, layer) of every layer a target names."""
    for block in ("extract", "explain", "linear"):
        for i, t in enumerate((config.get(block) or {}).get("targets", [])):
            for j, layer in enumerate(t["layers"]):
                yield f"{block}.targets.{i}.layers.{j}", t["model"], layer
    for i, t in enumerate((config.get("specialization") or {}).get("targets", [])):
        for j, layer in enumerate(t["layers"]):
            yield f"specialization.targets.{i}.layers.{j}", t["model"], layer
    for i, t in enumerate((config.get("pure") or {}).get("targets", [])):
        yield f"pure.targets.{i}.layer", t["model"], t["layer"]
        for j, layer in enumerate(t["earlier"]):
            yield f"pure.targets.{i}.earlier.{j}", t["model"], layer
    truth = config.get("truth")
    if truth and truth["base"] in config["models"]:
        for i, u in enumerate(truth["units"]):
            yield f"truth.units.{i}.layer", truth["base"], u["layer"]
        for j, layer in enumerate(truth["pure"]["earlier"]):
            yield f"truth.pure.earlier.{j}", truth["base"], layer


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
