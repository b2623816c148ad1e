"""`nexplain lineage` on a hand-made workdir: Snakemake records, real files and an MLflow store."""

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from nexplain.cli import main
from nexplain.tracking.lineage import DIFFERS

DATASET = "results/datasets/world"
CKPT = "results/models/m/checkpoint.pt"
METRICS = "results/models/m/metrics.json"
MODEL = "results/models/m/model.json"
SUMMARY = "results/m/world/layer3/activations/summary.parquet"
EXT_MODEL = "results/models/ext/model.json"
STALE = "sha256:" + "0" * 64


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dir_hash(root: Path) -> str:
    """The directory hash, computed independently of nexplain.hashing."""
    entries = sorted((p.relative_to(root).as_posix(), _sha(p.read_bytes()))
                     for p in root.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp")
    return "sha256:" + _sha("".join(f"{rel}\0{digest}\n" for rel, digest in entries).encode())


def _record(wf: Path, output: str, rule: str, inputs: list[str], params: list[str]) -> None:
    """A record named as Snakemake names it: base64 of the path, in 255-char chunks."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    path = wf / ".snakemake" / "metadata" / "/".join(name[i:i + 255] for i in range(0, len(name), 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "rule": rule, "input": inputs, "log": [f"logs/{rule}.log"], "shellcmd": None, "params": params,
        "code": "script", "record_format_version": 6, "job_hash": 1, "starttime": 1.0, "endtime": 2.0,
        "incomplete": False, "external_jobid": None, "input_checksums": {}}))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite store with its schema: migrating a fresh one takes seconds, copying it does not."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def workflow(tmp_path, monkeypatch, empty_store):
    """world -> train_model -> model -> activations, plus a model from an external checkpoint."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wf = (tmp_path / "wf").resolve()
    ext = tmp_path.resolve() / "user" / "ext.pt"
    _write(wf / DATASET / "images" / "a.png", b"png-a")
    _write(wf / DATASET / "index.csv", b"image,split\na.png,train\n")
    _write(wf / DATASET / ".snakemake_timestamp", b"")
    for path, data in [(CKPT, b"weights-1"), (METRICS, b'{"acc": 0.5}'), (MODEL, b'{"layers": []}'),
                       (SUMMARY, b"PAR1 summary"), (EXT_MODEL, b'{"ext": 1}')]:
        _write(wf / path, data)
    _write(ext, b"external weights")
    _record(wf, DATASET, "world", [], ["'aaaaaaaaaaaaaaaa'", "{'n_images': 8}"])
    for out in (CKPT, METRICS):
        _record(wf, out, "train_model", [DATASET], ["'bbbbbbbbbbbbbbbb'", "2"])
    _record(wf, MODEL, "model", [CKPT, METRICS], ["'cccccccccccccccc'"])
    _record(wf, SUMMARY, "activations", [MODEL, CKPT, DATASET], ["'dddddddddddddddd'", "16"])
    _record(wf, EXT_MODEL, "model", [str(ext)], ["'cccccccccccccccc'"])

    shutil.copy(empty_store, wf / "mlflow.db")
    client = MlflowClient(f"sqlite:///{wf / 'mlflow.db'}")
    exp = client.create_experiment("nexplain", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="workflow", start_time=500,
                               tags={"nexplain.kind": "workflow", "nexplain.workdir": str(wf)}).info.run_id
    hashes = {p: "sha256:" + _sha((wf / p).read_bytes()) for p in (CKPT, METRICS, MODEL, SUMMARY)}
    hashes[DATASET] = _dir_hash(wf / DATASET)
    runs = {}

    def job(key, rule, start, wildcards, inputs, outputs, params, workdir=wf):
        tags = {"mlflow.parentRunId": parent, "nexplain.rule": rule, "nexplain.wildcards": json.dumps(wildcards),
                "nexplain.inputs": json.dumps(inputs), "nexplain.outputs": json.dumps(outputs),
                "nexplain.code_version": params["code"], "nexplain.git_commit": "abc123",
                "nexplain.git_dirty": "false", "nexplain.version": "0.1.0", "nexplain.workdir": str(workdir)}
        run_id = client.create_run(exp, start_time=start, tags=tags).info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        runs[key] = run_id

    job("world", "world", 1000, {"dataset": "world"}, {}, {DATASET: hashes[DATASET]},
        {"code": "aaaaaaaaaaaaaaaa", "generate.n_images": "8"})
    train_out = {CKPT: hashes[CKPT], METRICS: hashes[METRICS]}
    train_params = {"code": "bbbbbbbbbbbbbbbb", "train.epochs": "2"}
    job("train", "train_model", 2000, {"model": "m"}, {DATASET: hashes[DATASET]}, train_out, train_params)
    # newer runs that must lose: one whose checkpoint is not the file on disk, one from another workdir
    job("train_stale", "train_model", 3000, {"model": "m"}, {DATASET: hashes[DATASET]},
        {**train_out, CKPT: STALE}, train_params)
    job("train_elsewhere", "train_model", 4000, {"model": "m"}, {DATASET: hashes[DATASET]}, train_out,
        train_params, workdir=tmp_path / "other")
    job("model", "model", 5000, {"model": "m"}, {CKPT: hashes[CKPT], METRICS: hashes[METRICS]},
        {MODEL: hashes[MODEL]}, {"code": "cccccccccccccccc", "model.arch": "resnet18"})
    job("activations", "activations", 6000, {"model": "m", "dataset": "world", "layer": "layer3"},
        {MODEL: hashes[MODEL], CKPT: hashes[CKPT], DATASET: hashes[DATASET]}, {SUMMARY: hashes[SUMMARY]},
        {"code": "dddddddddddddddd", "batch_size": "16"})
    return {"wf": wf, "ext": ext, "parent": parent, "runs": runs, "hashes": hashes}


def _lineage_json(capsys, *args):
    assert main(["lineage", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lineage_reaches_the_dataset_and_the_checkpoint(workflow, capsys):
    wf, runs = workflow["wf"], workflow["runs"]
    result = _lineage_json(capsys, SUMMARY, "--workdir", str(wf))
    nodes = result["nodes"]
    assert result["root"] == SUMMARY and set(nodes) == {SUMMARY, MODEL, CKPT, METRICS, DATASET}
    assert nodes[DATASET]["hash"] == _dir_hash(wf / DATASET) and nodes[DATASET]["role"] == "dataset"
    assert nodes[CKPT]["hash"] == "sha256:" + _sha(b"weights-1") and nodes[CKPT]["role"] == "checkpoint"
    assert [SUMMARY, DATASET] in result["edges"] and [MODEL, CKPT] in result["edges"]
    act = nodes[SUMMARY]
    assert act["mlflow_run_id"] == runs["activations"] and act["mlflow_parent_run_id"] == workflow["parent"]
    assert act["params"] == {"batch_size": "16", "code": "dddddddddddddddd"}
    assert act["wildcards"] == {"model": "m", "dataset": "world", "layer": "layer3"}
    assert act["code_version"] == "dddddddddddddddd" and act["git_commit"] == "abc123"
    assert all(i["recorded"] == i["current"] and not i["differs"] for i in act["inputs"])
    # the run whose hash matches the file wins over newer runs (stale, or from another workdir)
    assert nodes[CKPT]["mlflow_run_id"] == runs["train"] and nodes[CKPT]["note"] is None
    assert nodes[DATASET]["mlflow_run_id"] == runs["world"] and nodes[DATASET]["inputs"] == []

    assert main(["lineage", SUMMARY, "--workdir", str(wf)]) == 0
    out = capsys.readouterr().out
    assert f"mlflow run: {runs['activations']}  parent {workflow['parent']}" in out
    assert "param train.epochs = 2" in out and "wildcards: dataset=world, layer=layer3, model=m" in out
    assert f"{DATASET}  {_dir_hash(wf / DATASET)[:19]}  rule world  [dataset]" in out
    assert f"{CKPT}  sha256:{_sha(b'weights-1')[:12]}  rule train_model  [checkpoint]" in out
    headers = [line.strip() for line in out.splitlines() if line.strip().startswith(f"{CKPT}  ")]
    assert len(headers) == 2 and headers[1].endswith("rule train_model  (see above)")  # walked once
    assert "starttime" not in out and DIFFERS not in out


def test_dependents_of_the_dataset(workflow, capsys):
    wf = workflow["wf"]
    assert main(["lineage", "--dependents", DATASET, "--workdir", str(wf), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dependents"] == {CKPT: "train_model", METRICS: "train_model", MODEL: "model",
                                    SUMMARY: "activations"}
    assert main(["lineage", "--dependents", f"{wf}/{DATASET}/index.csv", "--workdir", str(wf)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 4") and f"{MODEL}  rule model  via {CKPT}, {METRICS}" in out
    assert EXT_MODEL not in out
    assert main(["lineage", "--dependents", SUMMARY, "--workdir", str(wf)]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(": 0")


def test_a_path_without_record_is_a_clear_error(workflow, capsys, tmp_path):
    wf = workflow["wf"]
    assert main(["lineage", "results/nope.txt", "--workdir", str(wf)]) == 1
    assert capsys.readouterr().err == ("nexplain: error: results/nope.txt was not produced by any rule of this "
                                       "workflow (no record in .snakemake/metadata)\n")
    assert main(["lineage", "x", "--workdir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty' / '.snakemake' / 'metadata'} not found" in err and "snakemake --touch" in err


def test_a_file_inside_a_directory_output_resolves_to_its_record(workflow, capsys, monkeypatch):
    wf = workflow["wf"]
    for path in (f"{DATASET}/images/a.png", f"./{DATASET}/images/a.png", str(wf / DATASET / "images" / "a.png")):
        result = _lineage_json(capsys, path, "--workdir", str(wf))
        assert result["query"] == f"{DATASET}/images/a.png" and result["root"] == DATASET
        assert result["nodes"][DATASET]["rule"] == "world"
    monkeypatch.chdir(wf)  # the default workdir is the current directory
    assert main(["lineage", f"{DATASET}/index.csv"]) == 0
    assert f"lies inside the directory output {DATASET}" in capsys.readouterr().out


def test_a_modified_checkpoint_is_flagged(workflow, capsys):
    wf = workflow["wf"]
    (wf / CKPT).write_bytes(b"weights-2")
    nodes = _lineage_json(capsys, SUMMARY, "--workdir", str(wf))["nodes"]
    assert nodes[CKPT]["note"] == DIFFERS and nodes[CKPT]["mlflow_run_id"] == workflow["runs"]["train_stale"]
    assert nodes[CKPT]["hash"] == "sha256:" + _sha(b"weights-2")
    ckpt_in = {i["path"]: i for i in nodes[MODEL]["inputs"]}[CKPT]
    assert ckpt_in["differs"] and ckpt_in["recorded"] == workflow["hashes"][CKPT]
    assert main(["lineage", SUMMARY, "--workdir", str(wf)]) == 0
    out = capsys.readouterr().out
    assert f"! {DIFFERS} (recorded sha256:{'0' * 12})" in out
    assert out.count(f"input {CKPT}  sha256:{_sha(b'weights-2')[:12]}  ! differs from recorded "
                     f"{workflow['hashes'][CKPT][:19]}") == 2  # as model and activations saw it


def test_without_mlflow(workflow, capsys, monkeypatch):
    wf = workflow["wf"]
    result = _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")
    assert result["mlflow"] == "not consulted (--no-mlflow)"
    act = result["nodes"][SUMMARY]
    assert act["params"] == ["'dddddddddddddddd'", "16"] and act["code_version"] == "dddddddddddddddd"
    assert act["mlflow_run_id"] is None and act["wildcards"] is None
    assert result["nodes"][DATASET]["hash"] == _dir_hash(wf / DATASET)
    assert main(["lineage", SUMMARY, "--workdir", str(wf), "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "params (unnamed, from Snakemake): 'dddddddddddddddd', 16" in out and "mlflow run" not in out
    # an unreachable server is reported, not fatal
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    result = _lineage_json(capsys, SUMMARY, "--workdir", str(wf))
    assert result["mlflow"].startswith("not consulted (http://127.0.0.1:9: ")
    assert result["nodes"][CKPT]["hash"] == "sha256:" + _sha(b"weights-1")


def test_external_inputs_are_sources(workflow, capsys):
    wf, ext = workflow["wf"], workflow["ext"]
    assert main(["lineage", EXT_MODEL, "--workdir", str(wf)]) == 0
    assert f"source  {ext}  sha256:{_sha(b'external weights')[:12]}  [checkpoint]" in capsys.readouterr().out
    result = _lineage_json(capsys, str(ext), "--workdir", str(wf))
    assert result["nodes"][str(ext)]["used_by"] == [EXT_MODEL]
    assert main(["lineage", str(ext), "--workdir", str(wf)]) == 0
    assert f"not produced by any rule; it is an input of {EXT_MODEL}" in capsys.readouterr().out


def test_long_paths_are_read_from_chunked_record_names(tmp_path, capsys):
    out = "results/" + "/".join(["x" * 100] * 3) + "/out.txt"  # base64 name > 255 chars
    _write(tmp_path / out, b"long")
    _record(tmp_path, out, "world", [], [])
    result = _lineage_json(capsys, out, "--workdir", str(tmp_path), "--no-mlflow")
    assert result["nodes"][out]["hash"] == "sha256:" + _sha(b"long")


def _save_jobs(wf: Path) -> None:
    """nexplain's content records of the fixture's jobs, as the runner saves them after each job."""
    from nexplain.hashing import content_hash
    from nexplain.tracking.records import save

    jobs = [("world", {"dataset": "world"}, [], [DATASET]),
            ("train_model", {"model": "m"}, [DATASET], [CKPT, METRICS]),
            ("model", {"model": "m"}, [CKPT, METRICS], [MODEL]),
            ("activations", {"model": "m", "dataset": "world", "layer": "layer3"}, [MODEL, CKPT, DATASET], [SUMMARY])]
    for rule, wildcards, inputs, outputs in jobs:
        save({"rule": rule, "wildcards": wildcards, "params": {"code": "dddddddddddddddd", "batch_size": "16"},
              "inputs": {p: content_hash(wf / p) for p in inputs}, "outputs": {p: content_hash(wf / p) for p in outputs},
              "code_version": "dddddddddddddddd", "git_commit": "abc123", "git_dirty": "false"}, wf)


@pytest.mark.reliability
def test_an_edited_artifact_is_flagged_without_mlflow(workflow, capsys):
    from nexplain.tracking.lineage import EDITED

    wf = workflow["wf"]
    _save_jobs(wf)
    nodes = _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")["nodes"]
    assert not any(n.get("edited") for n in nodes.values())
    act = nodes[SUMMARY]  # the job's record stands in for MLflow's run
    assert act["params"] == {"batch_size": "16", "code": "dddddddddddddddd"} and act["git_commit"] == "abc123"
    assert all(i["recorded"] == i["current"] and not i["differs"] for i in act["inputs"])

    edit = b'{"acc": 0.99}'
    (wf / METRICS).write_bytes(edit)  # a hand edit, after train_model made it
    (wf / DATASET / "index.csv").write_bytes(b"image,split\na.png,test\n")
    nodes = _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")["nodes"]
    assert {k for k, n in nodes.items() if n.get("edited")} == {METRICS, DATASET}
    assert nodes[METRICS]["edited"] == EDITED and nodes[METRICS]["saved_hash"] == workflow["hashes"][METRICS]
    assert main(["lineage", SUMMARY, "--workdir", str(wf), "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert f"{METRICS}  sha256:{_sha(edit)[:12]}  rule train_model  (same job as {CKPT})" in out
    assert out.count(f"! {EDITED} (recorded {workflow['hashes'][METRICS][:19]})") == 1  # walked once
    assert f"! {EDITED} (recorded {workflow['hashes'][DATASET][:19]})" in out
    assert main(["lineage", SUMMARY, "--workdir", str(wf)]) == 0  # and with MLflow
    assert f"! {EDITED} (recorded {workflow['hashes'][METRICS][:19]})" in capsys.readouterr().out


def test_a_file_unlike_the_version_dvc_lock_pins_is_flagged(workflow, capsys):
    from nexplain.tracking.lineage import EDITED, UNPINNED

    wf = workflow["wf"]
    listing = json.dumps([{"md5": hashlib.md5(b"weights-0").hexdigest(), "relpath": "models/m/checkpoint.pt"},
                          {"md5": hashlib.md5(b'{"layers": []}').hexdigest(), "relpath": "models/m/model.json"}])
    md5 = hashlib.md5(listing.encode()).hexdigest()
    _write(wf / ".dvc" / "cache" / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir", listing.encode())
    (wf / "dvc.lock").write_text(f"stages:\n  pipeline:\n    outs:\n    - path: results\n      hash: md5\n"
                                 f"      md5: {md5}.dir\n")
    nodes = _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")["nodes"]
    assert nodes[CKPT]["edited"] == UNPINNED and nodes[MODEL]["edited"] is None  # no record of ours: dvc.lock
    _save_jobs(wf)
    (wf / CKPT).write_bytes(b"weights-0")  # `dvc checkout` brought back the pinned version: not an edit
    assert _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")["nodes"][CKPT]["edited"] is None
    (wf / MODEL).write_bytes(b'{"layers": ["x"]}')
    assert _lineage_json(capsys, SUMMARY, "--workdir", str(wf), "--no-mlflow")["nodes"][MODEL]["edited"] == EDITED
