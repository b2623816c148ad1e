"""End to end on the tiny config, then the incremental-recompute contract.

The workflow is copied (with its package source) into a temp dir, so the test can
edit code and config there and ask Snakemake what it would rerun.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(wf: Path, *args, check=True):
    env = {**os.environ, "PYTHONPATH": str(wf / "src")}  # jobs import the copy, like the code hash does
    proc = subprocess.run([*SNAKEMAKE, "--cores", "2", "--configfile", "tiny.yaml", *args],
                          cwd=wf, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _scheduled(wf: Path) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    out = _snakemake(wf, "--dry-run").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _copy_workflow(wf: Path) -> Path:
    wf.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, wf / name)
    for name in ("rules", "scripts", "envs"):
        shutil.copytree(REPO / name, wf / name)
    shutil.copytree(REPO / "src" / "nexplain", wf / "src" / "nexplain",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tests" / "data" / "tiny.yaml", wf / "tiny.yaml")
    return wf


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    wf = _copy_workflow(tmp_path_factory.mktemp("wf"))
    _snakemake(wf)
    return wf


def test_end_to_end_outputs(workflow):
    r = workflow / "results"
    assert (r / "datasets/world/index.csv").is_file()
    assert (r / "models/resnet18_world/checkpoint.pt").is_file()
    assert (r / "world/concepts/presence.parquet").is_file()
    for layer, units in (("layer3", 256), ("layer4", 512)):
        summary = pq.read_table(r / f"resnet18_world/world/{layer}/activations/summary.parquet")
        assert summary.num_rows == 60 and summary.num_columns == units + 1
        maps = pq.ParquetFile(r / f"resnet18_world/world/{layer}/activations/maps.parquet")
        assert maps.metadata.num_rows == 60 * units


def test_a_rerun_from_scratch_gives_the_same_bytes(workflow, tmp_path):
    again = _copy_workflow(tmp_path / "again")
    _snakemake(again)
    first, second = _digests(workflow / "results"), _digests(again / "results")
    assert first.keys() == second.keys() and len(first) > 100
    assert [k for k in first if first[k] != second[k]] == []


def test_nothing_to_do_after_a_full_run(workflow):
    assert _scheduled(workflow) == {}


def test_param_change_reruns_only_that_rule_and_downstream(workflow):
    tiny = workflow / "tiny.yaml"
    original = tiny.read_text()
    try:
        tiny.write_text(original.replace("units_per_row_group: 8", "units_per_row_group: 4"))
        assert _scheduled(workflow) == {"activations": 2, "all": 1}
        tiny.write_text(original.replace("epochs: 1", "epochs: 2"))
        assert _scheduled(workflow) == {"train_model": 1, "model": 1, "activations": 2, "all": 1}
    finally:
        tiny.write_text(original)
    assert _scheduled(workflow) == {}


def test_code_change_reruns_only_rules_that_import_it(workflow):
    module = workflow / "src/nexplain/activations.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a comment changes nothing\n")
        assert _scheduled(workflow) == {}
        module.write_text(original + "\n\ndef _new_helper():\n    return 1\n")
        assert _scheduled(workflow) == {"activations": 2, "all": 1}
    finally:
        module.write_text(original)
    world = workflow / "src/nexplain/data/world.py"
    original = world.read_text()
    try:
        world.write_text(original + "\n\ndef _new_helper():\n    return 1\n")
        # the world feeds everything downstream
        assert _scheduled(workflow) == {"world": 1, "concepts": 1, "train_model": 1, "model": 1,
                                        "activations": 2, "all": 1}
    finally:
        world.write_text(original)


def test_bad_config_stops_before_any_job(workflow):
    proc = _snakemake(workflow, "--dry-run", "--config", "threads=many", check=False)
    assert proc.returncode != 0
    assert "key 'threads': 'many' is not of type 'integer'" in proc.stdout + proc.stderr
