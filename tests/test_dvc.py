"""DVC around Snakemake, and MLflow runs, on a private git repo of the workflow (tiny config)."""

import json
import re
from collections import Counter

import pytest
from mlflow import MlflowClient

from workflow_copy import commit, digests, dvc, run, snakemake


@pytest.fixture(scope="module")
def repo(tiny_run):
    """`dvc repro` once on a fresh git repo (conftest's shared tiny run); its output kept for the tests."""
    return tiny_run


def test_dvc_status_is_clean_and_nothing_reruns_after_a_run(repo):
    wf, _ = repo
    assert "Data and pipelines are up to date" in dvc(wf, "status").stdout
    assert "didn't change, skipping" in dvc(wf, "repro").stdout
    assert "Nothing to be done" in snakemake(wf, "--dry-run", configfile=None).stdout


def test_dvc_lock_pins_every_dependency_and_output(repo):
    wf, _ = repo
    lock = (wf / "dvc.lock").read_text()
    for path in ("Snakefile", "rules", "scripts", "src/nexplain", "results"):
        assert re.search(rf"- path: {re.escape(path)}\n\s+hash: md5\n\s+md5: [0-9a-f]{{32}}", lock), path
    assert "n_images: 60" in lock  # the config params


def test_every_job_has_one_finished_child_run(repo):
    wf, log = repo
    steps = int(re.findall(r"(\d+) of \1 steps \(100%\) done", log)[-1])
    jobs = sorted(p.parent.name + "/" + p.stem for p in (wf / "logs/benchmarks").rglob("*.tsv"))
    assert len(jobs) == steps - 1  # every step but the `all` target runs a script
    client = MlflowClient(f"sqlite:///{wf}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("nexplain").experiment_id])
    parents = [r for r in runs if r.data.tags.get("nexplain.kind") == "workflow"]
    children = [r for r in runs if r.data.tags.get("nexplain.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(jobs)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    rules = Counter(r.data.tags["nexplain.rule"] for r in children)
    assert rules == {"world": 1, "concepts": 1, "geometry": 1, "train_model": 1, "model": 1, "activations": 2,
                     "explain": 6, "merge_explanations": 3, "splits": 1, "label_matrix": 1, "linear": 2,
                     "simulate": 2, "merge_simulation": 1, "top_impact": 2, "merge_top_impact": 1, "area_chart": 1,
                     "captions": 1, "train_vlm": 2, "vlm_embeddings": 2, "evaluate_vlm": 2, "vlm_matrix": 1,
                     "relevance": 2, "merge_relevance": 1, "pure": 1, "causal": 1,
                     "specialization_explain": 2, "specialization": 1,
                     "score_report": 1, "unit_pages": 1, "headlines": 1}


def test_metrics_and_plots_come_from_the_score_files(repo):
    wf, _ = repo
    shown = json.loads(dvc(wf, "metrics", "show", "--json").stdout)
    metrics = json.dumps(shown)
    assert '"test_accuracy"' in metrics and '"zero_shot_auc"' in metrics
    assert '"netdissect_iou"' in metrics and '"le_label_val_corr"' in metrics  # per layer
    table = dvc(wf, "metrics", "show").stdout
    assert "headlines.json" in table and len(table) < 1500  # a few grouped numbers, not thousands of columns
    plots = dvc(wf, "plots", "show", "--json").stdout
    assert '"val_accuracy"' in plots and '"epoch": 1' in plots


def test_push_then_pull_into_a_fresh_clone_restores_the_same_bytes(repo, tmp_path):
    wf, _ = repo
    dvc(wf, "remote", "add", "-f", "-d", "test", str(tmp_path / "remote"))
    dvc(wf, "push")
    commit(wf, "results")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(wf), str(clone))
    dvc(clone, "pull")
    assert digests(clone / "results") == digests(wf / "results")
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    snakemake(clone, "--touch", configfile=None)  # pulled files get fresh mtimes in any order
    assert "Nothing to be done" in snakemake(clone, "--dry-run", configfile=None).stdout


def test_lineage_of_an_explanation_table_reaches_dataset_and_checkpoint(repo, capsys):
    from nexplain.cli import main
    from nexplain.hashing import content_hash

    wf, _ = repo
    table = "results/resnet18_world/world/layer4/explanations/coex.parquet"
    assert main(["lineage", "--json", "--workdir", str(wf), table]) == 0
    result = json.loads(capsys.readouterr().out)
    nodes = result["nodes"]
    dataset, checkpoint = "results/datasets/world", "results/models/resnet18_world/checkpoint.pt"
    assert nodes[dataset]["hash"] == content_hash(wf / dataset) and nodes[dataset]["rule"] == "world"
    assert nodes[checkpoint]["hash"] == content_hash(wf / checkpoint) and nodes[checkpoint]["rule"] == "train_model"
    assert nodes[checkpoint]["params"]["train.epochs"] == "1"
    assert all(n["mlflow_run_id"] for n in nodes.values())  # every job's run is found
    maps = "results/resnet18_world/world/layer4/activations/maps.parquet"
    assert nodes[maps]["rule"] == "activations" and nodes[maps]["hash"] == content_hash(wf / maps)
    recorded = {i["path"]: i["recorded"] for n in nodes.values() for i in n.get("inputs", [])}
    assert recorded[dataset] == nodes[dataset]["hash"] and recorded[checkpoint] == nodes[checkpoint]["hash"]


def _jobs(log: str) -> dict[str, int]:
    if "Nothing to be done" in log:
        return {}
    table = log.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_a_code_change_through_dvc_reruns_only_what_uses_it(repo):
    """`dvc repro` must not disturb mtimes (no unprotect copies), so Snakemake's own choice stands."""
    wf, _ = repo
    unused = wf / "src/nexplain/tracking/lineage.py"  # no rule imports it: the stage reruns, no job does
    unused.write_text(unused.read_text() + "\n\ndef _probe():\n    return 1\n")
    proc = dvc(wf, "repro")
    assert _jobs(proc.stdout + proc.stderr) == {}
    module = wf / "src/nexplain/compositional/explain.py"
    module.write_text(module.read_text() + "\n\ndef _probe():\n    return 1\n")
    proc = dvc(wf, "repro")
    # the merged tables are rewritten, so the simulation that reads them reruns too; specialization
    # explains the snapshots with the same module
    assert _jobs(proc.stdout + proc.stderr) == {"explain": 6, "merge_explanations": 3, "simulate": 2,
                                                "merge_simulation": 1, "causal": 1,
                                                "specialization_explain": 2, "specialization": 1,
                                                "score_report": 1, "unit_pages": 1, "headlines": 1, "all": 1}
    assert "Data and pipelines are up to date" in dvc(wf, "status").stdout


def _documented_commands(doc: str, heading: str) -> list[str]:
    """The commands of the first bash block after `heading` in docs/<doc>, comments stripped."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
    block = text.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_documented_commands_work_as_written_after_a_run(repo, tmp_path):
    """docs/versioning.md's DVC block, its lineage and MLflow commands, as a user types them after
    `make run` (snakemake, then `dvc commit`): each exits 0 and does what the doc says."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    from services.slurm import free_port
    from workflow_copy import BIN, env

    wf, _ = repo
    dvc(wf, "remote", "default", "local")     # the project's default (an earlier test pushed elsewhere)
    dvc(wf, "commit", "--force", "--quiet")  # the last step of `make run`
    commit(wf, "a run")                       # so that HEAD~1 exists for `dvc metrics diff HEAD~1`
    commands = _documented_commands("versioning.md", "### DVC")
    assert commands[:3] == ["dvc status", "dvc repro", "dvc push"]
    out = {}
    for cmd in commands:
        if cmd.startswith("dvc add /data"):  # an example path of the user's own
            continue
        out[cmd] = run(wf, BIN / cmd.split()[0], *cmd.split()[1:]).stdout
    assert "Data and pipelines are up to date" in out["dvc status"]
    assert (wf.parent / "nexplain-dvc-remote").is_dir()  # the default remote, created by the push
    assert "headlines.json" in out["dvc metrics show"] and "netdissect_iou" in out["dvc metrics show"]
    assert (wf / "dvc_plots" / "index.html").is_file()
    lineage = run(wf, BIN / "nexplain", "lineage", "results/resnet18_world/world/layer4/activations/summary.parquet")
    assert "lineage of results/resnet18_world/world/layer4/activations/summary.parquet" in lineage.stdout
    assert "nexplain: results" in run(wf, BIN / "nexplain", "summary", "--config", "config.yaml").stdout
    port = free_port()  # `mlflow ui --backend-store-uri sqlite:///mlflow.db`, on a free local port
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", "sqlite:///mlflow.db",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=wf, env=env(wf),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, body = time.time() + 90, ""
        while time.time() < deadline and not body:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=nexplain"
                with urllib.request.urlopen(url, timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert '"name": "nexplain"' in body or '"name":"nexplain"' in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
