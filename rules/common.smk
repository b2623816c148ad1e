# Config validation, paths and input functions shared by every stage.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))  # the workflow's own package copy, for validation and code versions

from nexplain.codeversion import code_version
from nexplain.compute import STAGES, stage_settings
from nexplain.config import BRODEN_KINDS, check_plan, truth_recipe, validate_config
from nexplain.errors import ConfigError

CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or "config"
try:
    validate_config(config, source=CONFIG_SOURCE)
    if workflow.is_main_process:  # jobs re-read this file; their plan was checked once, here
        check_plan(config, source=CONFIG_SOURCE, workdir=Path.cwd())  # layers, concept sets; imports torchvision
except ConfigError as e:
    raise WorkflowError(str(e)) from None

RESULTS = config["results"]
DATASETS = config["datasets"]
MODELS = config["models"]
EXTRACT = config["extract"]
EXPLAIN = config.get("explain") or {"targets": []}
LINEAR = config.get("linear") or {"targets": []}
VLMS = config.get("vlms") or {}
PURE = config.get("pure") or {"targets": []}
CAUSAL = config.get("causal") or {}
SPECIALIZATION = config.get("specialization") or {"enabled": False, "targets": []}
COMPUTE = config.get("compute") or {}
RESOURCES = config.get("resources") or {}


def _one_of(names):
    """A wildcard pattern matching exactly these names (none: matches nothing)."""
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    model="|".join(map(re.escape, MODELS)),
    layer="[^/]+",
    method="netdissect|coex|clustered",
    shard=r"\d+of\d+",
    source=r"[A-Za-z0-9_\-]+",
    vlm=_one_of(VLMS),
    simulator=_one_of(["label", *VLMS]),


def code(script):
    """Hash of a script and the package code it imports: a `params:` entry, so edits rerun the rule."""
    return code_version(Path(workflow.basedir) / "scripts" / f"{script}.py", SRC)


def compute(stage):
    """A torch stage's device, batch size and autocast (`compute:`): a `params:` entry, as they shape results."""
    return stage_settings(COMPUTE, stage)


def rule_resources(rule):
    """What a job of `rule` asks of a scheduler (`resources:`), plus a GPU where its stage runs on cuda."""
    out = {**(RESOURCES.get("default") or {}), **(RESOURCES.get("rules") or {}).get(rule, {})}
    if rule in STAGES and "gpu" not in out and compute(rule)["device"].startswith("cuda"):
        out["gpu"] = 1
    return out


def root_of(dataset):
    """A generated world lives under results/; any other dataset is read where it is."""
    ds = DATASETS[dataset]
    # local(): a dataset on disk stays where it is under a default remote storage provider
    return f"{RESULTS}/datasets/{dataset}" if ds["kind"] == "world" else local(ds["root"])


def dataset_root(wildcards):
    return root_of(wildcards.dataset)


def train_dataset_root(wildcards):
    return root_of(MODELS[wildcards.model]["train"]["dataset"])


def model_weights(wildcards):
    """The weights file a model step reads, if it has one on disk."""
    m = MODELS[wildcards.model]
    if m["source"] == "train":
        return {"checkpoint": f"{RESULTS}/models/{wildcards.model}/checkpoint.pt",
                "metrics": f"{RESULTS}/models/{wildcards.model}/metrics.json"}
    if m["source"] == "checkpoint":
        return {"checkpoint": local(m["path"])}
    if m.get("vlm") and VLMS[m["vlm"]]["source"] == "train":  # a `source: vlm` image tower
        return {"checkpoint": f"{RESULTS}/vlms/{m['vlm']}/open_clip_model.safetensors"}
    return {}


def vlm_train_root(wildcards):
    return root_of(VLMS[wildcards.vlm]["train"]["dataset"])


def vlm_weights(wildcards):
    """The checkpoint of a VLM trained here; nothing for open_clip tags or files."""
    if VLMS[wildcards.vlm]["source"] == "train":
        return {"checkpoint": f"{RESULTS}/vlms/{wildcards.vlm}/open_clip_model.safetensors"}
    return {}


def vlm_spec(name):
    """What `nexplain.models.load.load_clip` takes: an open_clip model name and weights."""
    v = VLMS[name]
    if v["source"] == "train":
        return {"name": v["arch"], "pretrained": f"{RESULTS}/vlms/{name}/open_clip_model.safetensors"}
    return {"name": v["name"], "pretrained": v.get("pretrained")}


def vlm_calibration(wildcards):
    """The calibration stored beside a VLM trained on this dataset; others are fitted here."""
    v = VLMS[wildcards.vlm]
    if v["source"] == "train" and v["train"]["dataset"] == wildcards.dataset:
        return {"calibration": f"{RESULTS}/vlms/{wildcards.vlm}/calibration.json"}
    return {}


def reader_kind(dataset):
    kind = DATASETS[dataset]["kind"]
    return "broden" if kind in BRODEN_KINDS else kind


def activation_outputs():
    return [
        f"{RESULTS}/{t['model']}/{t['dataset']}/{layer}/activations/{part}.parquet"
        for t in EXTRACT["targets"] for layer in t["layers"] for part in ("summary", "maps")
    ]


def method_settings(method):
    """A method's search settings, as the `nexplain.compositional.explain.Settings` fields."""
    base = {"method": method, "quantile": EXPLAIN["quantile"]}
    return base if method == "netdissect" else {**base, **EXPLAIN[method]}


def shard_of(shard):
    """'2of4' -> [2, 4]"""
    i, n = shard.split("of")
    return [int(i), int(n)]


def shards(stage):
    """Jobs a layer's units are split over for a per-unit stage: `explain.shards`, or
    `compute.stages.<stage>.shards` (simulate, top_impact, relevance)."""
    if stage == "explain":
        return EXPLAIN["shards"]
    return ((COMPUTE.get("stages") or {}).get(stage) or {}).get("shards", 1)


def shard_parts(stage, stem):
    """An input function: the part files of a sharded stage, `stem` (with wildcards) + .part{i}of{n}.parquet."""
    def parts(wildcards):
        n = shards(stage)
        return [f"{stem}.part{i}of{n}.parquet".format(**dict(wildcards.items())) for i in range(n)]
    return parts


def explanation_outputs():
    return [
        f"{RESULTS}/{t['model']}/{t['dataset']}/{layer}/explanations/{method}.parquet"
        for t in EXPLAIN["targets"] for layer in t["layers"] for method in t["methods"]
    ]


def label_masking_outputs():
    if not EXPLAIN.get("label_masking", {}).get("enabled"):
        return []
    return [path.replace(".parquet", ".label_masking.parquet") for path in explanation_outputs()]


def linear_settings():
    """`nexplain.linear.linear.LinearSettings` fields from the `linear:` block."""
    if not LINEAR["targets"]:
        return {}
    return {"lam": LINEAR["lam"], "alpha": LINEAR["alpha"], **LINEAR["greedy"]}


def layer_activations(wildcards):
    base = f"{RESULTS}/{wildcards.model}/{wildcards.dataset}/{wildcards.layer}/activations"
    return {"summary": f"{base}/summary.parquet", "maps": f"{base}/maps.parquet"}


def _linear_target(wildcards):
    for t in LINEAR["targets"]:
        if (t["model"], t["dataset"]) == (wildcards.model, wildcards.dataset) and wildcards.layer in t["layers"]:
            return t
    raise WorkflowError(f"no linear target for {wildcards.model}/{wildcards.dataset}/{wildcards.layer}")


def simulated_explanations(wildcards):
    """Every explanation table of the layer the pipeline makes: LE per source, and the
    NetDissect / CoEx / Clustered tables of `explain:` targets."""
    base = f"{RESULTS}/{wildcards.model}/{wildcards.dataset}/{wildcards.layer}/explanations"
    out = {f"le_{s}": f"{base}/le_{s}.parquet" for s in _linear_target(wildcards)["sources"]}
    for t in EXPLAIN["targets"]:
        if (t["model"], t["dataset"]) == (wildcards.model, wildcards.dataset) and wildcards.layer in t["layers"]:
            out.update({m: f"{base}/{m}.parquet" for m in t["methods"]})
    return out


def zero_shot_template(wildcards):
    """Class name -> text of an image tower's zero-shot head (ablation, nexplain.linear.towers)."""
    vlm = MODELS[wildcards.model].get("vlm")
    return VLMS[vlm]["template"] if vlm else "{}"


def linear_outputs():
    out = []
    for t in LINEAR["targets"]:
        for layer in t["layers"]:
            base = f"{RESULTS}/{t['model']}/{t['dataset']}/{layer}"
            out += [f"{base}/explanations/le_{s}.parquet" for s in t["sources"]]
            out += [f"{base}/scores/simulation.{s}.parquet" for s in LINEAR["simulate"]["simulators"]]
            out += [f"{base}/scores/{name}" for name in ("top_impact.parquet", "area_chart.parquet")]
    return out


def pure_settings():
    """The `pure:` block without its targets and references (those reach the rules on their own)."""
    return {k: v for k, v in PURE.items() if k not in ("targets", "reference", "ceiling")}


def pure_target(wildcards):
    for t in PURE["targets"]:
        if (t["model"], t["dataset"], t["layer"]) == (wildcards.model, wildcards.dataset, wildcards.layer):
            return t
    raise WorkflowError(f"no pure target for {wildcards.model}/{wildcards.dataset}/{wildcards.layer}")


def pure_references(wildcards):
    """Image embeddings of the reference VLM and, if set, of the ceiling's."""
    emb = lambda vlm: f"{RESULTS}/{wildcards.dataset}/vlm/{vlm}/image_embeddings.parquet"
    out = {"reference": emb(PURE["reference"])}
    if PURE.get("ceiling"):
        out["ceiling"] = emb(PURE["ceiling"])
    return out


def pure_concepts(wildcards):
    """The label concept matrix that names each circuit, where the dataset has concept masks."""
    if reader_kind(wildcards.dataset) != "broden":
        return {}
    return {"concepts": f"{RESULTS}/{wildcards.dataset}/concept_matrix/label.parquet"}


def pure_outputs():
    return [f"{RESULTS}/{t['model']}/{t['dataset']}/{t['layer']}/pure/summary.json" for t in PURE["targets"]]


def report_names(wildcards):
    """Explainer names of a layer's report: formula methods of `explain:`, LE per source."""
    formulas = [m for t in EXPLAIN["targets"]
                if (t["model"], t["dataset"]) == (wildcards.model, wildcards.dataset) and wildcards.layer in t["layers"]
                for m in t["methods"]]
    return {"formulas": formulas, "linear": [f"le_{s}" for s in _linear_target(wildcards)["sources"]]}


def report_sources(wildcards):
    """The concept matrices of a layer's Linear Explanations."""
    return _linear_target(wildcards)["sources"]


def layer_explanations(wildcards):
    """{formulas, linear}: the explanation tables of a layer's report, in report_names order."""
    base = f"{RESULTS}/{wildcards.model}/{wildcards.dataset}/{wildcards.layer}"
    return {kind: [f"{base}/explanations/{m}.parquet" for m in ms] for kind, ms in report_names(wildcards).items()}


def report_inputs(wildcards):
    base = f"{RESULTS}/{wildcards.model}/{wildcards.dataset}/{wildcards.layer}"
    names = report_names(wildcards)
    out = {**layer_explanations(wildcards),
           "simulations": [f"{base}/scores/simulation.{s}.parquet" for s in LINEAR["simulate"]["simulators"]],
           "top_impact": f"{base}/scores/top_impact.parquet",
           "area_chart": f"{base}/scores/area_chart.parquet",
           "maps": f"{base}/activations/maps.parquet",  # the top images of each range
           "root": dataset_root(wildcards),
           # NeuronEval's metrics: the units' own activations, and what each explanation predicts from
           "summary": f"{base}/activations/summary.parquet", "splits": f"{RESULTS}/{wildcards.dataset}/splits.parquet",
           "matrices": [f"{RESULTS}/{wildcards.dataset}/concept_matrix/{s}.parquet" for s in report_sources(wildcards)]}
    if names["formulas"]:
        out["concepts"] = f"{RESULTS}/{wildcards.dataset}/concepts"
    if _has_pure(wildcards):
        out["pure"] = f"{base}/pure/summary.parquet"
    if (wildcards.model, wildcards.dataset, wildcards.layer) in causal_layers():
        out["efficacy"], out["paste"] = f"{base}/causal/efficacy.parquet", f"{base}/causal/paste.parquet"
    if wildcards.layer in specialization_layers(wildcards):
        out["specialization"] = f"{RESULTS}/specialization/{wildcards.model}/{wildcards.dataset}/specialization.parquet"
    return out


def _has_pure(wildcards):
    return any((t["model"], t["dataset"], t["layer"]) == (wildcards.model, wildcards.dataset, wildcards.layer)
               for t in PURE["targets"])


def unit_page_inputs(wildcards):
    """The report a layer's unit pages show, and PURE's unit figures where PURE ran on the layer."""
    base = f"{RESULTS}/{wildcards.model}/{wildcards.dataset}/{wildcards.layer}"
    files = {"units": "units.parquet", "scores": "scores.parquet", "figures": "units", "methods": "methods.png",
             "scatter": "corr_vs_ablation.png", "top_impact": "top_impact_curve.png"}
    out = {k: f"{base}/report/{name}" for k, name in files.items()}
    out |= {"maps": f"{base}/activations/maps.parquet", "root": dataset_root(wildcards)}  # every unit's top images
    if _has_pure(wildcards):
        out["pure"] = f"{base}/pure/units"
    return out


def page_patterns():
    """The unit pages the Snakemake report embeds: the index and the pages of `report.units` (the
    units with figures); every unit's page stays on disk beside them."""
    from nexplain.units import select_units

    spec = (config.get("report") or {}).get("units", "0-3")
    units = r"\d{4}" if spec == "all" else "|".join(f"{u:04d}" for u in select_units(spec, 10**4))
    return [f"{{page,index|unit_({units})}}.html"]


def causal_layers():
    """(model, dataset, layer) of each score report on a generated world: what `causal` renders."""
    if not CAUSAL.get("enabled"):
        return []
    return [(t["model"], t["dataset"], layer) for t in LINEAR["targets"] for layer in t["layers"]
            if DATASETS[t["dataset"]]["kind"] == "world"]


def causal_inputs(wildcards):
    """The layer's explanations whose concepts get rendered in and out, and the test split."""
    return {**layer_explanations(wildcards),
            "concepts": f"{RESULTS}/{wildcards.dataset}/concepts",
            "splits": f"{RESULTS}/{wildcards.dataset}/splits.parquet"}


def causal_outputs():
    return [f"{RESULTS}/{m}/{d}/{layer}/causal/efficacy.parquet" for m, d, layer in causal_layers()]


def specialization_targets():
    """(model, dataset) pairs whose training is followed epoch by epoch (docs/specialization.md)."""
    if not SPECIALIZATION.get("enabled"):
        return []
    return [(t["model"], t["dataset"]) for t in SPECIALIZATION["targets"]]


def specialization_epochs(model):
    """The snapshots of a model's training, then its last epoch (the trained model itself)."""
    train = MODELS[model]["train"]
    return sorted({*train.get("snapshots", []), train["epochs"]})


def specialization_tables(wildcards):
    base = f"{RESULTS}/specialization/{wildcards.model}/{wildcards.dataset}"
    return {"tables": [f"{base}/epoch_{e}.parquet" for e in specialization_epochs(wildcards.model)],
            "concepts": f"{RESULTS}/{wildcards.dataset}/concepts"}


def specialization_layers(wildcards):
    """The layers of the layer's target that specialization follows, or none."""
    return [layer for t in SPECIALIZATION["targets"] if (t["model"], t["dataset"]) == (wildcards.model, wildcards.dataset)
            for layer in t["layers"]] if SPECIALIZATION.get("enabled") else []


def specialization_outputs():
    return [f"{RESULTS}/specialization/{m}/{d}/specialization.parquet" for m, d in specialization_targets()]


def report_outputs():
    return [f"{RESULTS}/{t['model']}/{t['dataset']}/{layer}/report/{name}"
            for t in LINEAR["targets"] for layer in t["layers"] for name in ("scores.json", "pages")]


def vlm_outputs():
    """Every trained VLM's zero-shot evaluation (and with it its checkpoint and calibration)."""
    return [f"{RESULTS}/vlms/{v}/zero_shot.json" for v, spec in VLMS.items() if spec["source"] == "train"]


def headline_inputs(wildcards):
    """The artifacts the headline numbers come from (nexplain.report.run_summary.headline_values)."""
    models = [f"{RESULTS}/models/{m}/metrics.json" for m, spec in MODELS.items() if spec["source"] == "train"]
    return models + report_outputs() + linear_outputs() + vlm_outputs() + pure_outputs()


def headline_config():
    """What headline_values reads of the config: the blocks that name targets and results."""
    return {k: config.get(k) for k in ("results", "models", "vlms", "explain", "linear", "pure") if k in config}


def all_outputs():
    concepts = [f"{RESULTS}/{d}/concepts" for d, ds in DATASETS.items() if ds["kind"] in BRODEN_KINDS]
    models = [f"{RESULTS}/models/{m}/model.json" for m in MODELS]
    return (concepts + models + activation_outputs() + explanation_outputs() + label_masking_outputs()
            + linear_outputs() + vlm_outputs() + pure_outputs() + causal_outputs() + specialization_outputs()
            + report_outputs()
            + [f"{RESULTS}/headlines.json"])
