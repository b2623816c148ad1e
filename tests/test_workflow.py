"""End to end on the tiny config, then the incremental-recompute contract (workflow_copy.py)."""

import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from browser import check_page, needs_chromium, screenshot
from workflow_copy import copy_workflow, digests, snakemake


def _scheduled(wf) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    out = snakemake(wf, "--dry-run").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


EXPLAIN_JOBS = {"explain": 6, "merge_explanations": 3}  # 3 methods x 2 shards of layer4, then merges
# layer4: LE(label), LE(world_siglip); simulation and Top Impact in 2 shards each, then merges
LINEAR_JOBS = {"linear": 2, "simulate": 2, "merge_simulation": 1, "top_impact": 2, "merge_top_impact": 1,
               "area_chart": 1}
CAUSAL_JOBS = {"causal": 1}  # layer4's counterfactuals read its explanations
SPEC_JOBS = {"specialization_explain": 2, "specialization": 1}  # the random init and the model, then the shares
LATE_JOBS = {"relevance": 2, "merge_relevance": 1, "pure": 1, "score_report": 1,
             "unit_pages": 1, "headlines": 1}  # PURE of layer4 (2 shards of relevances), the report, headlines
# tiny.yaml is merged over config.yaml, so config.yaml's world_vit is trained too
VLM_JOBS = {"captions": 1, "train_vlm": 2, "vlm_embeddings": 2, "evaluate_vlm": 2, "vlm_matrix": 1}


@pytest.fixture(scope="module")
def workflow(tiny_run):
    """The tiny config run end to end (conftest's run, shared with test_dvc, which may have rerun edited code)."""
    return tiny_run[0]


def test_end_to_end_outputs(workflow):
    r = workflow / "results"
    assert (r / "datasets/world/index.csv").is_file()
    assert (r / "models/resnet18_world/checkpoint.pt").is_file()
    assert (r / "world/concepts/presence.parquet").is_file()
    for layer, units in (("layer3", 256), ("layer4", 512)):
        summary = pq.read_table(r / f"resnet18_world/world/{layer}/activations/summary.parquet")
        assert summary.num_rows == 60 and summary.num_columns == units + 1
        maps = pq.ParquetFile(r / f"resnet18_world/world/{layer}/activations/maps.parquet")
        assert maps.metadata.num_rows == 60 and maps.metadata.num_columns == units + 1  # image_id + a map per unit


def test_specialization_follows_the_training_from_its_random_init(workflow):
    r = workflow / "results"
    assert [p.name for p in (r / "models/resnet18_world/snapshots").glob("*.pt")] == ["epoch_000.pt"]
    shares = pq.read_table(r / "specialization/resnet18_world/world/specialization.parquet").to_pandas()
    assert sorted(shares["epoch"].unique()) == [0, 1] and set(shares["layer"]) == {"layer4"}
    assert (shares["units"] == 8).all() and sorted(shares["range"].unique()) == [0, 1, 2]  # tiny.yaml's k: 3
    classes = ["unspecialized", "weak", "specialized", "unexplained", "dead"]
    assert np.allclose(shares[classes].sum(axis=1), 1.0)
    first = shares[shares["epoch"] == 0]  # the random init against its own most frequent formulas
    assert first["unspecialized"].max() > 0
    report = pq.read_table(r / "resnet18_world/world/layer4/report/scores.parquet").to_pandas()
    assert len(report[report["section"] == "specialization"]) == 2 * 3 * 3  # epochs x ranges x classes


def test_the_run_ends_with_where_its_results_are_and_its_headlines(tiny_run):
    log = tiny_run[1]
    end = log[log.rindex("nexplain: results"):]
    assert "resnet18_world: test accuracy" in end and "LE(label) val corr" in end
    assert "zero-shot mean AUC" in end and "report/pages/index.html" in end and "mlflow ui" in end


@pytest.mark.skipif(not os.environ.get("NEXPLAIN_FULL_TESTS"),
                    reason="a second whole tiny run (about 3.5 min, kept out of CI's 15 minutes): "
                           "`NEXPLAIN_FULL_TESTS=1 make test` runs it")
def test_a_rerun_from_scratch_gives_the_same_bytes(workflow, tmp_path):
    again = copy_workflow(tmp_path / "again")
    snakemake(again)
    first, second = digests(workflow / "results"), digests(again / "results")
    assert first.keys() == second.keys() and len(first) > 100
    assert [k for k in first if first[k] != second[k]] == []


def test_nothing_to_do_after_a_full_run(workflow):
    assert _scheduled(workflow) == {}


def test_param_change_reruns_only_that_rule_and_downstream(workflow):
    tiny = workflow / "tiny.yaml"
    original = tiny.read_text()
    try:
        tiny.write_text(original.replace("max_row_group_mb: 64", "max_row_group_mb: 32"))
        assert _scheduled(workflow) == {"activations": 2, **EXPLAIN_JOBS, **LINEAR_JOBS, **CAUSAL_JOBS, **LATE_JOBS,
                                        "all": 1}
        tiny.write_text(original.replace("epochs: 1,", "epochs: 3,"))  # the world model's (VLMs train 2 or 12)
        assert _scheduled(workflow) == {"train_model": 1, "model": 1, "activations": 2, **EXPLAIN_JOBS, **LINEAR_JOBS,
                                        **CAUSAL_JOBS, **SPEC_JOBS, **LATE_JOBS, "all": 1}
        tiny.write_text(original.replace("k: 3,", "k: 4,"))  # one method's setting: its jobs only
        assert _scheduled(workflow) == {"explain": 2, "merge_explanations": 1, "simulate": 2, "merge_simulation": 1,
                                        **CAUSAL_JOBS, **SPEC_JOBS, "score_report": 1, "unit_pages": 1, "headlines": 1,
                                        "all": 1}
        tiny.write_text(original.replace('units: "0-7"\n  share', 'units: "0-3"\n  share'))  # specialization's own
        assert _scheduled(workflow) == {**SPEC_JOBS, "score_report": 1, "unit_pages": 1, "headlines": 1, "all": 1}
        tiny.write_text(original.replace("top: 10", "top: 12"))  # PURE's setting: PURE and the report only
        assert _scheduled(workflow) == {**LATE_JOBS, "all": 1}
    finally:
        tiny.write_text(original)
    assert _scheduled(workflow) == {}


def test_code_change_reruns_only_rules_that_import_it(workflow):
    module = workflow / "src/nexplain/activations/activations.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a comment changes nothing\n")
        assert _scheduled(workflow) == {}
        module.write_text(original + "\n\ndef _new_helper():\n    return 1\n")
        # explain reads activation tables through this module too
        assert _scheduled(workflow) == {"activations": 2, **EXPLAIN_JOBS, **LINEAR_JOBS, **CAUSAL_JOBS, **LATE_JOBS,
                                        "all": 1}
    finally:
        module.write_text(original)
    world = workflow / "src/nexplain/data/world.py"
    original = world.read_text()
    try:
        world.write_text(original + "\n\ndef _new_helper():\n    return 1\n")
        # the world feeds everything downstream
        assert _scheduled(workflow) == {"world": 1, "concepts": 1, "geometry": 1, "train_model": 1, "model": 1,
                                        "splits": 1, "label_matrix": 1, **VLM_JOBS,
                                        "activations": 2, **EXPLAIN_JOBS, **LINEAR_JOBS, **CAUSAL_JOBS, **SPEC_JOBS,
                                        **LATE_JOBS, "all": 1}
    finally:
        world.write_text(original)


def test_the_default_config_plans_every_stage(tmp_path):
    """config.yaml's DAG, dry: the world's two VLMs are trained once, embed the world, and feed
    LE(VLM) (world_siglip) and a second simulator (world_vit) on both explained layers."""
    wf = copy_workflow(tmp_path / "default")
    out = snakemake(wf, "--dry-run", configfile=None).stdout
    table = out.split("Job stats:")[1].split("total")[0]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert {k: jobs[k] for k in ("captions", "train_vlm", "vlm_embeddings", "evaluate_vlm", "vlm_matrix",
                                 "linear", "simulate")} == {
        "captions": 1, "train_vlm": 2, "vlm_embeddings": 2, "evaluate_vlm": 2, "vlm_matrix": 2,
        "linear": 4, "simulate": 4}  # LE: {label, world_siglip} x 2 layers; simulators {world_vit, label}


def test_merged_shards_are_the_bytes_of_one_shard(workflow, tmp_path):
    """Simulation, Top Impact and relevances ran in 2 shards each; one shard gives the same tables."""
    merged = {"simulate": "scores/simulation.label.parquet", "top_impact": "scores/top_impact.parquet",
              "relevance": "pure/relevance.parquet"}
    layer = "results/resnet18_world/world/layer4"
    one = tmp_path / "one"
    shutil.copytree(workflow, one, symlinks=True, ignore=shutil.ignore_patterns(".git", ".dvc", "mlruns"))
    (one / "one_shard.yaml").write_text(yaml.safe_dump(
        {"compute": {"stages": {stage: {"shards": 1} for stage in merged}}, "mlflow": {"enabled": False}}))
    two = {stage: (workflow / layer / path).read_bytes() for stage, path in merged.items()}
    snakemake(one, "--configfile", "tiny.yaml", "one_shard.yaml", "--rerun-triggers", "mtime",
              "--forcerun", "merge_simulation", "merge_top_impact", "merge_relevance",
              *[f"{layer}/{path}" for path in merged.values()], configfile=None)
    for stage, path in merged.items():
        assert any((one / "logs" / stage).rglob("*part0of1.log")), stage  # it ran as one shard
        assert (one / layer / path).read_bytes() == two[stage], stage


def test_every_job_asks_for_resources_and_cuda_stages_for_a_gpu(tmp_path):
    """Dry runs of the default config: every job states mem_mb and runtime from `resources:`; with
    device cuda (no GPU needed for a dry run) the torch stages ask for a GPU and nothing else does."""
    wf = copy_workflow(tmp_path / "default")
    (wf / "cuda.yaml").write_text(yaml.safe_dump({"compute": {"device": "cuda"}}))
    torch_rules = {"train_model", "activations", "train_vlm", "vlm_embeddings", "relevance", "simulate",
                   "top_impact", "label_masking"}
    for extra, gpu_rules in (([], set()), (["--configfile", "config.yaml", "cuda.yaml"], torch_rules)):
        out = snakemake(wf, "--dry-run", *extra, configfile=None).stdout
        jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", out, re.M | re.S)
        assert len(jobs) > 50
        for rule, body in jobs:
            if rule == "all":
                continue
            res = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", body)[1].split(", "))
            expected = {"mem_mb": 2000, "runtime": 10} | {"train_model": {"mem_mb": 4000, "runtime": 30},
                                                          "explain": {"mem_mb": 4500, "runtime": 60}}.get(rule, {})
            if rule in ("train_model", "explain", "world", "merge_relevance"):
                assert {k: int(res[k]) for k in expected} == expected, rule
            assert int(res["mem_mb"]) >= 2000 and int(res["runtime"]) >= 10, rule
            assert int(res.get("gpu", 0)) == (rule in gpu_rules), rule


def test_bad_config_stops_before_any_job(workflow):
    proc = snakemake(workflow, "--dry-run", "--config", "threads=many", check=False)
    assert proc.returncode != 0
    assert "key 'threads': 'many' is not of type 'integer'" in proc.stdout + proc.stderr


def test_a_tracking_server_that_does_not_answer_stops_before_any_job(workflow):
    concepts = workflow / "results/world/concepts/presence.parquet"
    before = concepts.stat().st_mtime_ns
    proc = snakemake(workflow, "--forcerun", "concepts", check=False, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert proc.returncode != 0
    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in proc.stderr
    assert concepts.stat().st_mtime_ns == before  # no job ran


LAYER4 = "results/resnet18_world/world/layer4"


def test_the_report_lands_in_the_parent_mlflow_run(workflow):
    """Every file of the layer's report (tables, figures, pages) is an artifact of the invocation's parent run."""
    from mlflow import MlflowClient

    from nexplain.tracking.tracking import tracking_uri

    client = MlflowClient(tracking_uri({}, workflow))
    exp = client.get_experiment_by_name("nexplain")
    runs = client.search_runs([exp.experiment_id], "tags.`nexplain.kind` = 'workflow'")
    runs = [r for r in runs if r.data.tags["nexplain.workdir"] == str(workflow.resolve())]

    def files(run_id, path=None):
        out = []
        for a in client.list_artifacts(run_id, path):
            out += files(run_id, a.path) if a.is_dir else [a.path]
        return out

    # one parent run per invocation that ran the report's rules (test_dvc's reruns add some)
    logged = sorted({f for r in runs for f in files(r.info.run_id)})
    report = workflow / LAYER4 / "report"
    on_disk = sorted(f"report/resnet18_world/world/layer4/{p.relative_to(report).as_posix()}" for p in report.rglob("*")
                     if p.is_file() and not p.name.startswith("."))
    assert logged == on_disk and len(on_disk) >= 12
    assert "report/resnet18_world/world/layer4/units/ranges_0000.png" in logged


@needs_chromium
def test_the_report_and_a_unit_page_open_in_a_browser(workflow, tmp_path):
    """`snakemake --report` on the tiny run, and a unit page, in headless Chromium: every image decodes,
    the tables are there, and the unit page says what units.parquet says."""
    html = tmp_path / "report.html"
    snakemake(workflow, "--report", html)
    shot = screenshot(html, tmp_path / "report.png", tmp_path)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000) and np.asarray(im.convert("L")).std() > 5
    sub = "resnet18_world layer4"
    figures = sorted(p.name for p in (workflow / LAYER4 / "report/units").glob("*.png"))
    assert {"area_0000.png", "le_0000.png", "ranges_0000.png", "top_0000.png"} <= set(figures)
    info = check_page(html, tmp_path, ["Report", f"{sub} units", f"view:{LAYER4}/report/units/ranges_0000.png"])
    assert info["steps"] == [True, True, True]
    assert info["broken"] == [] and info["images"] == 2  # the logo and the figure viewed
    assert info["tables"] == 1 and all(f"{LAYER4}/report/units/{name}" in info["text"] for name in figures)
    info = check_page(html, tmp_path, ["Report", f"{sub} unit pages", f"view:{LAYER4}/report/pages/unit_0000.html"])
    assert info["steps"] == [True, True, True] and info["frames"] == 1 and info["broken"] == []

    page = workflow / LAYER4 / "report/pages/unit_0000.html"
    info = check_page(page, tmp_path)
    embedded = [p for p in (workflow / LAYER4 / "report/units").glob("*_0000.png")]
    embedded += list((workflow / LAYER4 / "pure/units").glob("unit_0000.png"))
    assert info["broken"] == [] and info["images"] == len(embedded) + 1 >= 5  # + the top-image strip
    assert info["tables"] == 3  # explanations, Clustered CoEx ranges, Top Impact
    pages = workflow / LAYER4 / "report/pages"
    assert len(list(pages.glob("unit_*.html"))) == 512  # every unit of layer4 has a page
    info = check_page(pages / "unit_0300.html", tmp_path)  # outside report.units: no figures, still its top images
    assert info["broken"] == [] and info["images"] in (0, 1)
    info = check_page(pages / "index.html", tmp_path)
    assert info["broken"] == [] and info["rows"] >= 513 and "Units (512)" in info["text"]
    assert "<h2>Glossary</h2>" in (pages / "index.html").read_text()
    units = pq.read_table(workflow / LAYER4 / "report/units.parquet").to_pandas().set_index("unit")
    for method in ("netdissect", "coex", "le_label", "le_world_siglip"):
        assert units.loc[0, method] in info["text"]
    screenshot(page, tmp_path / "unit.png", tmp_path)
    with Image.open(tmp_path / "unit.png") as im:
        assert np.asarray(im.convert("L")).std() > 5
