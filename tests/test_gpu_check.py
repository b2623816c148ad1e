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


def test_another_cpu_type_is_held_to_the_stage_tolerance_not_to_equal_bytes(tiny_run, tmp_path):
    """A reference from another CPU type differs in the last bits (here: the layer4 summary scaled by
    1 + 1e-6, as other float kernels would); --other-cpu accepts that, the same-CPU check does not."""
    import os
    import shutil

    gpu_check = _gpu_check()
    reference = tmp_path / "reference"
    shutil.copytree(tiny_run[0], reference, symlinks=True, ignore=shutil.ignore_patterns(".git", ".dvc", "mlruns", "mlartifacts"))
    path = next(reference.glob("results/*/*/layer4/activations/summary.parquet"))
    stat = path.stat()
    table = pd.read_parquet(path)
    units = [c for c in table.columns if table[c].dtype.kind == "f"]
    table[units] = table[units] * (1 + 1e-6)
    table.to_parquet(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # an unchanged mtime: nothing downstream reruns
    rows = {}
    for flag in ([], ["--other-cpu"]):
        out = tmp_path / ("other" if flag else "same")
        code = gpu_check.main(["--devices", "cpu", "--reference", str(reference), "--stages", "activations",
                               "--out", str(out), *flag])
        row = json.loads((out / "gpu_check.json").read_text())["rows"][0]
        rows[bool(flag)] = (code, row)
    (same_code, same), (other_code, other) = rows[False], rows[True]
    assert 0 < same["max_rel_diff"] == other["max_rel_diff"] <= 1e-5
    assert same_code == 1 and not same["ok"] and same["tolerance"] == 0.0
    assert other_code == 0 and other["ok"] and other["tolerance"] == gpu_check.TOLERANCE["activations"]
