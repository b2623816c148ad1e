import copy
import random

import numpy as np
import pytest
import yaml

from nexplain.config import SPLITS, check_plan, load_config, schema, split_sizes, truth_recipe, validate_config
from nexplain.data.world import _assign_splits, _image_classes
from nexplain.errors import ConfigError
from nexplain.splits import make_splits


@pytest.fixture
def config():
    return load_config("config.yaml")


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["compute"]["stages"]["activations"].__setitem__("batch_size", "abc"),
     "key 'compute.stages.activations.batch_size': 'abc' is not of type 'integer'"),
    (lambda c: c["compute"].__setitem__("device", "gpu"), "key 'compute.device': 'gpu' does not match"),
    (lambda c: c["compute"]["stages"]["train_model"].__setitem__("amp", True),
     "key 'compute.stages.train_model': Additional properties are not allowed ('amp' was unexpected)"),
    (lambda c: c["resources"]["rules"]["explain"].__setitem__("mem_mb", "4G"),
     "key 'resources.rules.explain.mem_mb': '4G' is not of type 'integer'"),
    (lambda c: c["datasets"]["world"]["generate"].__setitem__("n_images", 2.5), "key 'datasets.world.generate.n_images': 2.5 is not of type 'integer'"),
    (lambda c: c["models"]["resnet18_world"].__setitem__("source", "hub"), "key 'models.resnet18_world.source': 'hub' is not one of"),
    (lambda c: c["models"]["resnet18_world"].__setitem__("path", "x.pt"), "key 'models.resnet18_world': Additional properties are not allowed ('path' was unexpected)"),
    (lambda c: c["extract"]["targets"][0].__setitem__("dataset", "imagenet"), "key 'extract.targets.0.dataset': 'imagenet' is not defined; valid choices: world"),
    (lambda c: c["datasets"]["world"]["generate"]["splits"].__setitem__("test", 0.5), "fractions sum to 1.3"),
    (lambda c: c["datasets"].__setitem__("broden", {"kind": "broden"}), "key 'datasets.broden': 'root' is a required property"),
    (lambda c: c["linear"]["targets"][0].__setitem__("sources", ["siglip"]),
     "key 'linear.targets.0.sources': 'siglip' is not defined; valid choices: label, world_siglip, world_vit"),
    (lambda c: c["linear"]["simulate"].__setitem__("simulators", ["clip"]),
     "key 'linear.simulate.simulators': 'clip' is not defined; valid choices: label, world_siglip, world_vit"),
    (lambda c: c["datasets"]["world"].pop("concept_set"),
     "the VLM concept matrix 'world_siglip' needs 'datasets.world.concept_set'"),
    (lambda c: c["vlms"]["world_vit"]["train"].__setitem__("loss", "hinge"),
     "key 'vlms.world_vit.train.loss'"),
    (lambda c: c["vlms"]["world_vit"]["train"].__setitem__("dataset", "places"),
     "key 'vlms.world_vit.train.dataset': 'places' is not defined; valid choices: world"),
    (lambda c: c["vlms"].__setitem__("label", c["vlms"]["world_vit"]), "key 'vlms'"),
    (lambda c: c["linear"]["targets"][0].__setitem__("model", "vit"), "key 'linear.targets.0.model': 'vit' is not defined"),
    (lambda c: c["linear"]["split"].__setitem__("fractions", [0.7, 0.2, 0.2]), "key 'linear.split.fractions': fractions sum to 1.1"),
    (lambda c: c["linear"]["simulate"].__setitem__("scalings", ["exact"]), "key 'linear.simulate.scalings.0': 'exact' is not one of"),
    (lambda c: c["linear"].__setitem__("alpha", 0), "key 'linear.alpha': 0 is less than or equal to the minimum of 0"),
    (lambda c: c["models"]["resnet18_world"]["train"].__setitem__("low_res", {"size": 56, "epochs": 12}),
     "key 'models.resnet18_world.train.low_res.epochs': 12 of 12 epochs at low resolution"),
    (lambda c: c["truth"]["train"].__setitem__("epochs", 4), "key 'truth.train.low_res.epochs': 4 of 4 epochs at low resolution"),
    (lambda c: c["truth"]["train"].__setitem__("lr", 0.1), "key 'truth.train': Additional properties are not allowed ('lr' was"),
    (lambda c: c["models"]["resnet18_world"]["train"].__setitem__("snapshots", [1, 2]),
     "key 'models.resnet18_world.train.snapshots': [1, 2]; specialization needs the random init, epoch 0"),
    (lambda c: c["models"]["resnet18_world"]["train"].__setitem__("snapshots", [0, 13]),
     "key 'models.resnet18_world.train.snapshots': epochs [13] are past the last of 12"),
    (lambda c: c["specialization"]["targets"][0].__setitem__("model", "vit"),
     "key 'specialization.targets.0.model': 'vit' is not defined; valid choices: resnet18_world"),
    (lambda c: c["specialization"].__setitem__("share", 0), "key 'specialization.share': 0 is less than or equal"),
])
def test_bad_config_names_key_and_expectation(config, mutate, message):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate_config(bad)
    assert message in str(e.value)


def test_default_and_tiny_configs_are_valid(config):
    assert config["models"]["resnet18_world"]["source"] == "train"
    load_config("tests/data/tiny.yaml")


def test_the_full_study_merges_over_the_default_as_snakemake_does(config):
    from snakemake.utils import update_config

    full = copy.deepcopy(config)
    update_config(full, yaml.safe_load(open("configs/full.yaml")))
    validate_config(full, "configs/full.yaml")
    assert full["pure"]["top"] == 50 and config["pure"]["top"] == 20
    assert full["linear"]["simulate"]["replay"] == {"units": "0-15", "scalings": ["norm"]}  # a key kept
    assert full["vlms"]["world_siglip"]["train"]["crops"] == 64  # the rest of the recipe stays


def test_the_planted_recipe_is_the_base_recipe_with_truth_train_over_it(config):
    base, recipe = config["models"]["resnet18_world"], truth_recipe(config)
    assert recipe["train"]["low_res"] == config["truth"]["train"]["low_res"] != base["train"]["low_res"]
    assert {k: v for k, v in recipe["train"].items() if k != "low_res"} == \
        {k: v for k, v in base["train"].items() if k not in ("low_res", "snapshots")}  # the planted model keeps none
    assert recipe["arch"] == base["arch"] and recipe["input"] == base["input"]


def test_specialization_follows_a_model_trained_here(config):
    config["models"]["ckpt"] = {"source": "checkpoint", "arch": "resnet18", "num_classes": 10, "path": "m.pt",
                                "input": config["models"]["resnet18_world"]["input"]}
    config["specialization"]["targets"][0]["model"] = "ckpt"
    _raises(config, "key 'specialization.targets.0.model': 'ckpt' has source 'checkpoint'")
    config["specialization"]["enabled"] = False  # off: nothing to check
    validate_config(config)


def test_specialization_layers_are_checked_against_the_architecture(config):
    config["specialization"]["targets"][0]["layers"] = ["layer9"]
    _raises(config, "key 'specialization.targets.0.layers.0': model 'resnet18_world'", plan=True)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_real_model_and_dataset_kinds_validate(config):
    c = copy.deepcopy(config)
    c["datasets"]["broden"] = {"kind": "broden", "root": "/data/broden1_224"}
    c["datasets"]["inet"] = {"kind": "imagefolder", "root": "/data/val"}
    c["models"]["ckpt"] = {"source": "checkpoint", "arch": "resnet50", "num_classes": 365, "path": "m.pt",
                           "input": {"size": 224, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}}
    c["models"]["tv"] = {"source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
    c["models"]["clip"] = {"source": "open_clip", "name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
    yaml.safe_dump(c)  # stays plain data
    validate_config(c)


def _raises(config, message, plan=False, workdir="."):
    with pytest.raises(ConfigError) as e:
        validate_config(config, "c.yaml")
        if plan:
            check_plan(config, "c.yaml", workdir)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("block, key", [("coex", "k"), ("coex", "ranges"), ("coex", "start_beam"), ("coex", "seed"),
                                        ("clustered", "quantile")])
def test_a_key_its_method_ignores_is_refused(config, block, key):
    config["explain"][block][key] = 1
    valid = "length, beam, penalty, search" + (", k, ranges, start_beam, seed" if block == "clustered" else "")
    _raises(config, f"c.yaml: key 'explain.{block}': Unevaluated properties are not allowed ('{key}' was unexpected); "
                    f"valid keys: {valid}")


def test_clustered_needs_its_own_keys(config):
    del config["explain"]["clustered"]["start_beam"]
    _raises(config, "key 'explain.clustered': 'start_beam' is a required property")


@pytest.mark.parametrize("where, mutate, message", [
    ("world", lambda c: c["datasets"]["world"]["generate"]["splits"].update(train=0.8, val=0.0),
     "key 'datasets.world.generate.splits.val': 0.0 is less than or equal to the minimum of 0 (every split is used"),
    ("world", lambda c: c["datasets"]["world"]["generate"]["splits"].update(train=0.795, val=0.005),
     "key 'datasets.world.generate.splits': the val split gets 0 of 60 images (fraction 0.005); every split needs one"),
    ("linear", lambda c: c["linear"]["split"].update(fractions=[0.8, 0.2, 0]),
     "key 'linear.split.fractions.2': 0 is less than or equal to the minimum of 0"),
    ("linear", lambda c: c["linear"]["split"].update(fractions=[0.6, 0.005, 0.395]),
     "key 'linear.split.fractions': the val split of dataset 'world' gets 0 of 60 images (fraction 0.005)"),
])
def test_every_split_gets_an_image(where, mutate, message):
    tiny = load_config("tests/data/tiny.yaml")
    mutate(tiny)
    _raises(tiny, message)


def test_split_sizes_are_the_world_and_linear_cuts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fractions, n = list(rng.dirichlet([1, 1, 1])), int(rng.integers(10, 400))
        world = _assign_splits(_image_classes(0, n), dict(zip(SPLITS, fractions)), 0)
        assert split_sizes(fractions, n) == [int((world == s).sum()) for s in SPLITS]
        linear = make_splits(np.arange(n), fractions)["split"]
        assert split_sizes(fractions, n) == [int((linear == s).sum()) for s in SPLITS]


def test_trained_vlms_need_the_linear_split(config):
    del config["linear"], config["pure"]
    _raises(config, "key 'linear': trained VLMs (world_siglip, world_vit) use the split 'linear.split'")


@pytest.mark.parametrize("text, message", [
    (None, "key 'datasets.world.concept_set': cannot read concept set"),
    ("# only a comment\n\n", "/sets/w.txt: no concepts"),  # where it was looked for
    ("red\nblue\nred\n", "sets/w.txt: concepts listed twice: ['red']"),
    (b"\xff\xfe red", "/sets/w.txt as UTF-8 (invalid start byte)"),
])
def test_concept_sets_are_read_at_plan_time(config, tmp_path, text, message):
    (tmp_path / "sets").mkdir()
    if isinstance(text, str):
        (tmp_path / "sets" / "w.txt").write_text(text)
    elif text is not None:
        (tmp_path / "sets" / "w.txt").write_bytes(text)
    config["datasets"]["world"]["concept_set"] = "sets/w.txt"
    _raises(config, message, plan=True, workdir=tmp_path)


def test_concept_sets_are_relative_to_the_workdir(config, tmp_path):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "w.txt").write_text("red\n")
    config["datasets"]["world"]["concept_set"] = "sets/w.txt"
    check_plan(config, "c.yaml", tmp_path)


def test_a_vlm_image_tower_is_a_model_and_the_vit_config_merges(config):
    from snakemake.utils import update_config

    vit = copy.deepcopy(config)
    update_config(vit, yaml.safe_load(open("configs/vit.yaml")))
    check_plan(validate_config(vit, "configs/vit.yaml"), "configs/vit.yaml")  # the MLP layer exists
    assert vit["models"]["world_vit_image"] == {"source": "open_clip", "name": "nexplain-world-vit", "vlm": "world_vit",
                                                "pretrained": "results/vlms/world_vit/open_clip_model.safetensors"}
    validate_config(vit)  # resolved entries validate again (jobs re-read the config)
    config["models"]["tower"] = {"source": "vlm", "vlm": "siglip"}
    _raises(config, "key 'models.tower.vlm': 'siglip' is not defined; valid choices: world_siglip, world_vit")


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["extract"]["targets"][0]["layers"].append("layer5"),
     "c.yaml: key 'extract.targets.0.layers.4': model 'resnet18_world': unknown layer 'layer5' of ResNet; "
     "valid choices (top level): conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc"),
    (lambda c: c["explain"]["targets"][0]["layers"].__setitem__(1, "layer4.2"),
     "key 'explain.targets.0.layers.1': model 'resnet18_world': unknown layer 'layer4.2' of ResNet; "
     "valid choices under 'layer4': layer4.{0..1}"),
    (lambda c: c["linear"]["targets"][0]["layers"].__setitem__(0, "layer3.0.conv3"),
     "key 'linear.targets.0.layers.0': model 'resnet18_world': unknown layer 'layer3.0.conv3'"),
    (lambda c: c["pure"]["targets"][0]["earlier"].__setitem__(2, "Layer3"),
     "key 'pure.targets.0.earlier.2': model 'resnet18_world': unknown layer 'Layer3'"),
    (lambda c: c["models"]["resnet18_world"].__setitem__("arch", "resnet_18"),
     "key 'models.resnet18_world.arch': unknown torchvision architecture 'resnet_18'; 80 are known, e.g. resnet18"),
])
def test_layers_are_checked_against_the_architecture(config, mutate, message):
    mutate(config)
    _raises(config, message, plan=True)


def test_every_model_source_is_checked_without_weights(config):
    config["models"]["ckpt"] = {"source": "checkpoint", "arch": "resnet50", "num_classes": 365, "path": "absent.pt",
                                "input": {"size": 224, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}}
    config["models"]["clip"] = {"source": "open_clip", "name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
    config["models"]["hub"] = {"source": "open_clip", "name": "hf-hub:org/model"}  # its file says what it is
    config["extract"]["targets"] += [{"model": "ckpt", "dataset": "world", "layers": ["layer4.2.conv3"]},
                                     {"model": "clip", "dataset": "world", "layers": ["transformer.resblocks.11"]},
                                     {"model": "hub", "dataset": "world", "layers": ["anything"]}]
    check_plan(validate_config(config), "c.yaml")
    config["extract"]["targets"][-2]["layers"] = ["transformer.resblocks.12"]
    _raises(config, "key 'extract.targets.2.layers.0': model 'clip': unknown layer 'transformer.resblocks.12' of "
                    "VisionTransformer; valid choices under 'transformer.resblocks': transformer.resblocks.{0..11}",
            plan=True)
    config["models"]["clip"]["name"] = "ViT-B-33"
    _raises(config, "key 'models.clip.name': unknown open_clip model 'ViT-B-33'", plan=True)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["linear"].pop("concept_filter"), "key 'linear': 'concept_filter' is a required property"),
    (lambda c: c["linear"]["concept_filter"].update(top=0),
     "key 'linear.concept_filter.top': 0 is less than the minimum of 1 (how many of a concept's largest train"),
    (lambda c: c["linear"]["concept_filter"].update(min_mean="high"),
     "key 'linear.concept_filter.min_mean': 'high' is not of type 'number'"),
    (lambda c: c["linear"]["concept_filter"].update(max=1), "valid keys: top, min_mean"),
])
def test_concept_filter(config, mutate, message):
    assert config["linear"]["concept_filter"] == {"top": 5, "min_mean": 0.5}  # today's keep_concepts
    mutate(config)
    _raises(config, message)


# Fuzz: seeded mutations of the shipped configs, each a valid config or a one-line ConfigError naming a key.
def _schema_values(node, keys):
    """Every value the schema gives under `keys` (its bounds, its enums): the edges worth probing."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from (v if isinstance(v, list) else [v]) if k in keys else _schema_values(v, keys)
    elif isinstance(node, list):
        for v in node:
            yield from _schema_values(v, keys)


BOUNDS = sorted(set(_schema_values(schema(), ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))))
ENUMS = sorted({v for v in _schema_values(schema(), ("enum",)) if isinstance(v, str)})
WRONG = ["abc", "", -1, 0, 2.5, 10**9, None, True, [], {}, [1, "x"], {"x": 1}, "a\nb", "all", "0-3", *ENUMS]
NAMES = ["nope", "label", "world", "resnet18_world", "world_vit"]
LAYERS = ["layer5", "layer4.9", "layer4.0.", "conv1.weight", "features.0", "fc", "layer1.0.conv2", "Layer4"]
REFERENCES = ("model", "dataset", "reference", "ceiling", "sources", "simulators")


def _walk(node, path=()):
    yield path, node
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in children:
        yield from _walk(v, (*path, k))


def _mutate(config, rng) -> str:
    nodes = [(p, v) for p, v in _walk(config) if p]
    kind = rng.choice(["wrong type", "out of range", "unknown key", "removed key", "undefined name", "unknown layer"])
    if kind == "out of range":
        nodes = [(p, v) for p, v in nodes if isinstance(v, (int, float)) and not isinstance(v, bool)]
        path, v = rng.choice(nodes)
        value = rng.choice([-v, v * 0.5, v + 10**6, *[b + d for b in BOUNDS for d in (-1, -1e-9, 0, 0.5)]])
    elif kind == "unknown key":
        path, v = rng.choice([(p, v) for p, v in nodes if isinstance(v, dict)] + [((), config)])
        v["bogus"] = rng.choice(WRONG)
        return f"{kind} at {path}"
    elif kind == "removed key":
        path, _ = rng.choice(nodes)
        del _parent(config, path)[path[-1]]
        return f"{kind} {path}"
    elif kind == "undefined name":
        path, _ = rng.choice([(p, v) for p, v in nodes if p[-1] in REFERENCES or len(p) > 1 and p[-2] in REFERENCES])
        value = rng.choice(NAMES)
    elif kind == "unknown layer":
        layers = [(p, v) for p, v in nodes if p[-1] == "layer" or len(p) > 1 and p[-2] in ("layers", "earlier")]
        path, _ = rng.choice(layers)
        value = rng.choice(LAYERS)
    else:
        path, _ = rng.choice(nodes)
        value = rng.choice(WRONG)
    _parent(config, path)[path[-1]] = copy.deepcopy(value)
    return f"{kind} {path} = {value!r}"


def _parent(config, path):
    for k in path[:-1]:
        config = config[k]
    return config


@pytest.mark.reliability
def test_fuzzed_configs_are_valid_or_one_line_config_errors():
    rng, outcomes = random.Random(19), {"valid": 0, "refused": 0}
    bases = [load_config("config.yaml"), load_config("tests/data/tiny.yaml")]
    for case in range(400):
        config = copy.deepcopy(bases[case % 2])
        what = "; ".join(_mutate(config, rng) for _ in range(rng.choice([1, 1, 2])))
        try:
            check_plan(validate_config(config, "fuzz.yaml"), "fuzz.yaml")
            outcomes["valid"] += 1
        except ConfigError as e:
            message = str(e)
            assert "\n" not in message and message.startswith("fuzz.yaml: key '"), (what, message)
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - any other type is the failure this test looks for
            pytest.fail(f"{what}: {type(e).__name__}: {e}")
    assert min(outcomes.values()) > 20, outcomes
