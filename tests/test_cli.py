from nexplain.cli import main


def test_check_config(capsys, tmp_path):
    assert main(["check-config", "config.yaml"]) == 0
    assert "config.yaml: valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(open("config.yaml").read().replace("threads: 2", "threads: two"))
    assert main(["check-config", str(bad)]) == 1
    assert "key 'threads': 'two' is not of type 'integer'" in capsys.readouterr().err


def test_code_files_lists_the_modules_a_rule_runs(capsys):
    assert main(["code-files", "scripts/activations.py"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "nexplain/activations/activations.py" in out and "nexplain/activations/hooks.py" in out
    assert "nexplain/data/world.py" not in out
    assert out[-1].startswith("code version: ")


def test_layers_of_a_torchvision_model(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(open("config.yaml").read().replace(
        "  # resnet18_imagenet:", "  tv:\n    source: torchvision\n    arch: resnet18\n    weights: null\n"
        "    input: {size: 64, mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}\n  # x:"))
    assert main(["layers", "tv", "--config", str(config)]) == 0
    layers = capsys.readouterr().out.split()
    assert {"layer1", "layer4.1.conv2", "fc"} <= set(layers)
    assert main(["layers", "nope", "--config", str(config)]) == 1
    assert "valid choices: resnet18_world, tv" in capsys.readouterr().err
