import copy

import pytest
import yaml

from nexplain.config import load_config, validate_config
from nexplain.errors import ConfigError


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
