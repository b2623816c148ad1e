"""benchmarks/gpu_check.py: its CPU half on the shared tiny run, and its comparison."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from workflow_copy import REPO


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_half_reruns_each_stage_to_the_same_bytes(tiny_run, tmp_path):
    """Each torch stage rerun alone on the CPU (as the GPU half reruns it on cuda) gives the reference's tables."""
    gpu_check = _gpu_check()
    stages = ["activations", "vlm_embeddings", "simulate"]
    code = gpu_check.main(["--devices", "cpu", "--reference", str(tiny_run[0]), "--stages", *stages,
                           "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert code == 0 and list(rows) == stages
    assert rows["activations"]["files"] == 4  # summary and maps of layer3 and layer4
    for r in rows.values():
        assert r["ok"] and r["max_rel_diff"] == 0.0 and r["seconds"] > 0
    assert "| activations | cpu |" in (tmp_path / "gpu_check.md").read_text()


def test_compare_finds_a_float_drift_and_a_changed_label(tmp_path):
    gpu_check = _gpu_check()
    ref = pd.DataFrame({"unit": [0, 1], "score": [0.5, -2.0], "formula": ["a", "b"]})
    ref.to_parquet(tmp_path / "ref.parquet")
    drift = ref.assign(score=[0.5, -2.0 + 2e-3])
    drift.to_parquet(tmp_path / "drift.parquet")
    worst, bad = gpu_check.compare_file(tmp_path / "drift.parquet", tmp_path / "ref.parquet")
    assert worst == pytest.approx(1e-3) and bad == []  # 2e-3 against a scale of max(1, |-2|)
    ref.assign(formula=["a", "c"]).to_parquet(tmp_path / "label.parquet")
    worst, bad = gpu_check.compare_file(tmp_path / "label.parquet", tmp_path / "ref.parquet")
    assert bad == ["label.parquet:formula: values differ"]
    (tmp_path / "a.json").write_text(json.dumps({"m": {"corr": 0.25, "n": 3}}))
    (tmp_path / "b.json").write_text(json.dumps({"m": {"corr": 0.25 + 1e-6, "n": 3}}))
    worst, bad = gpu_check.compare_file(tmp_path / "a.json", tmp_path / "b.json")
    assert np.isclose(worst, 1e-6) and bad == []
