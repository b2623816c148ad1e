"""The end of a run: where the results are and their headline numbers, from the artifacts alone."""

import json

import pandas as pd
import pytest

from nexplain.cli import main as cli
from nexplain.report.run_summary import summary

CONFIG = {
    "results": "results",
    "models": {"net": {"source": "train"}, "hub": {"source": "torchvision"}},
    "vlms": {"clip": {"source": "train"}},
    "explain": {"targets": [{"model": "net", "dataset": "world", "layers": ["layer4"]}]},
    "linear": {"targets": [{"model": "net", "dataset": "world", "layers": ["layer4", "layer3"]}]},
    "pure": {"targets": [{"model": "net", "dataset": "world", "layer": "layer4"}], "reference": "clip"},
    "mlflow": {"enabled": True, "tracking_uri": "sqlite:////runs/mlflow.db"},
}


@pytest.fixture
def run(tmp_path):
    r = tmp_path / "results"
    (r / "models/net").mkdir(parents=True)
    (r / "models/net/metrics.json").write_text(json.dumps({"test_accuracy": 0.6133, "chance": 0.1}))
    base = r / "net/world/layer4"
    (base / "report/pages").mkdir(parents=True)
    (base / "report/pages/index.html").write_text("<html></html>")
    (base / "report/scores.json").write_text(json.dumps({"metrics.netdissect.iou": 0.1234,
                                                         "metrics.coex.iou": 0.2,
                                                         "metrics.clustered.iou": 0.05}))
    (base / "explanations").mkdir()
    pd.DataFrame({"val_corr": [0.5, 0.7, float("nan")], "dead": [False, False, True]}).to_parquet(
        base / "explanations/le_label.parquet")
    (r / "vlms/clip").mkdir(parents=True)
    (r / "vlms/clip/zero_shot.json").write_text(json.dumps({"mean_auc": 0.9123}))
    (base / "pure").mkdir()
    (base / "pure/summary.json").write_text(json.dumps({"best_layer": "layer3", "layer3.corr_mean": 0.31}))
    return tmp_path


def test_headlines_and_places_come_from_the_artifacts(run):
    text = summary(CONFIG, run)
    assert "net: test accuracy 61.3% (chance 10.0%)" in text
    assert "net/world/layer4: netdissect IoU 0.123, coex IoU 0.200, clustered IoU 0.050, LE(label) val corr 0.600" in text
    assert "clip: zero-shot mean AUC 0.912 (test split)" in text
    assert "PURE net/layer4: relevances of layer3 agree best with clip (distance corr 0.310)" in text
    assert "results/net/world/layer4/report/pages/index.html" in text
    assert "mlflow ui --backend-store-uri sqlite:////runs/mlflow.db" in text
    # what was not run is left out, not printed as a guess: layer3 has no results, hub is not trained
    assert "layer3:" not in text and "hub" not in text


def test_an_empty_results_folder_still_says_where_to_look(tmp_path):
    text = summary(CONFIG, tmp_path)
    assert "accuracy" not in text and "mlflow ui" in text


def test_the_cli_prints_the_same_summary(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    monkeypatch.setattr("nexplain.config.load_config", lambda path: CONFIG)
    assert cli(["summary"]) == 0
    assert capsys.readouterr().out == summary(CONFIG, ".")


def test_headline_values_are_few_and_grouped_for_dvc_metrics(run):
    from nexplain.report.run_summary import headline_values

    v = headline_values(CONFIG, run)
    assert list(v) == ["net", "net/world/layer4", "clip", "pure net/layer4"]
    assert v["net"] == {"test_accuracy": 0.6133, "chance": 0.1}
    assert v["net/world/layer4"] == {"netdissect_iou": 0.1234, "coex_iou": 0.2, "clustered_iou": 0.05,
                                     "le_label_val_corr": 0.6}
    assert v["clip"] == {"zero_shot_auc": 0.9123} and v["pure net/layer4"] == {"layer3": 0.31}
