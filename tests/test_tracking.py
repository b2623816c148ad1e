import hashlib
import json
import time
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from snakemake.iocontainers import Namedlist

from nexplain.hashing import content_hash
from nexplain.tracking import tracking
from nexplain.tracking.parent_run import log_parent_artifacts
from nexplain.tracking.tracking import Outcome, TrackingError


def test_flatten_nested_params_to_dotted_keys():
    flat = tracking.flatten({"generate": {"n_images": 60, "splits": {"train": 0.6}}, "layers": ["a", "b"],
                             "code": "abc", "long": "x" * 7000})
    assert flat == {"generate.n_images": "60", "generate.splits.train": "0.6", "layers": '["a", "b"]',
                    "code": "abc", "long": "x" * 6000}


def test_tracking_uri_env_then_config_then_sqlite_in_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri({}, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.tracking_uri({"tracking_uri": "http://server:5000"}, tmp_path) == "http://server:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")
    assert tracking.tracking_uri({"tracking_uri": "http://server:5000"}, tmp_path) == "http://other:5000"


def test_a_server_that_does_not_answer_fails_fast_with_its_uri():
    start = time.perf_counter()
    with pytest.raises(TrackingError, match=r"http://127.0.0.1:9 does not answer"):
        tracking.check_reachable("http://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - start < 5
    tracking.check_reachable("sqlite:////nonexistent/mlflow.db")  # local stores need no server


def test_content_hash_of_files_and_trees(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert content_hash(f) == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_bytes(b"1")
    before = content_hash(d)
    (d / ".snakemake_timestamp").touch()  # Snakemake's marker is not content
    assert content_hash(d) == before
    (d / "sub" / "x").rename(d / "sub" / "y")  # a rename is
    assert content_hash(d) != before


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """A workflow invocation's parent run in a fresh SQLite store; env restored afterwards."""
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT,
                tracking.ENV_GIT_COMMIT, tracking.ENV_GIT_DIRTY, "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    env = tracking.start_workflow({"experiment": "t"}, tmp_path, tmp_path, "snakemake --cores 2")
    return SimpleNamespace(env=env, client=MlflowClient(env[tracking.ENV_URI]), root=tmp_path)


def _job(root, rule="train_model"):
    (root / "in.txt").write_text("input")
    (root / "out.json").write_text('{"acc": 0.5}')
    (root / "job.log").write_text("INFO training\n")
    return SimpleNamespace(
        rule=rule, wildcards=Namedlist(fromdict={"model": "m"}),
        params=Namedlist(fromdict={"train": {"epochs": 2, "lr": 0.05}, "code": "0123456789abcdef"}),
        input=Namedlist(["in.txt"]), output=Namedlist(["out.json", "missing.bin"]), log=Namedlist(["job.log"]))


def test_a_job_logs_one_child_run_with_its_provenance(tracked):
    job = _job(tracked.root)
    run_id = tracking.JobRun(job).finish(Outcome(metrics={"test_accuracy": 0.5, "val_accuracy": [0.1, 0.3]},
                                           artifacts=["out.json"]), "FINISHED", 1.5)
    run = tracked.client.get_run(run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "train_model[model=m]"
    assert tags["mlflow.parentRunId"] == tracked.env[tracking.ENV_PARENT]
    assert tags["nexplain.rule"] == "train_model" and json.loads(tags["nexplain.wildcards"]) == {"model": "m"}
    assert json.loads(tags["nexplain.inputs"]) == {"in.txt": content_hash(tracked.root / "in.txt")}
    assert json.loads(tags["nexplain.outputs"]) == {"out.json": content_hash(tracked.root / "out.json")}
    assert tags["nexplain.code_version"] == "0123456789abcdef"
    assert run.data.params == {"train.epochs": "2", "train.lr": "0.05", "code": "0123456789abcdef"}
    assert run.data.metrics == {"test_accuracy": 0.5, "val_accuracy": 0.3, "wall_s": 1.5}
    curve = tracked.client.get_metric_history(run_id, "val_accuracy")
    assert [(m.step, m.value) for m in curve] == [(1, 0.1), (2, 0.3)]
    assert sorted(a.path for a in tracked.client.list_artifacts(run_id)) == ["job.log", "out.json", "provenance.json"]


def test_the_parent_run_ends_with_the_workflow(tracked):
    tracking.end_workflow(ok=False)
    parent = tracked.client.get_run(tracked.env[tracking.ENV_PARENT])
    assert parent.info.status == "FAILED" and parent.data.tags["nexplain.kind"] == "workflow"


def test_untracked_jobs_log_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    assert tracking.JobRun(_job(tmp_path)).finish(Outcome(), "FINISHED", 0.1) is None
    assert log_parent_artifacts("report", [str(tmp_path / "job.log")]) is None


def test_report_files_and_folders_go_to_the_parent_run(tracked):
    job = _job(tracked.root, rule="score_report")
    figures = tracked.root / "units"
    (figures / "sub").mkdir(parents=True)
    (figures / "area_0000.png").write_bytes(b"png")
    (figures / "sub" / "x.png").write_bytes(b"png2")
    (figures / ".snakemake_timestamp").touch()
    parent = log_parent_artifacts("report/m/d/layer4", ["out.json", figures, "missing.bin"])
    run_id = tracking.JobRun(job).finish(Outcome(artifacts=["out.json"]), "FINISHED", 0.5)
    assert parent == tracked.env[tracking.ENV_PARENT]

    def files(run, path=None):
        out = []
        for a in tracked.client.list_artifacts(run, path):
            out += files(run, a.path) if a.is_dir else [a.path]
        return sorted(out)

    assert files(parent) == ["report/m/d/layer4/out.json", "report/m/d/layer4/units/area_0000.png",
                             "report/m/d/layer4/units/sub/x.png"]
    local = tracked.client.download_artifacts(parent, "report/m/d/layer4/units/sub/x.png", str(tracked.root / "dl"))
    assert open(local, "rb").read() == b"png2"
    assert files(run_id) == ["job.log", "out.json", "provenance.json"]  # the child run keeps its own


@pytest.mark.reliability
def test_a_metric_that_is_not_a_number_is_a_warning_not_a_crash(tracked, caplog):
    job = _job(tracked.root)
    run_id = tracking.JobRun(job).finish(Outcome(metrics={"test_accuracy": None, "curve": [0.1, "x"], "ok": 1}),
                                         "FINISHED", 1.0)
    run = tracked.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"ok": 1.0, "curve": 0.1, "wall_s": 1.0}
    assert "metric test_accuracy is None, not a number; not logged" in caplog.text
    assert "metric curve step 2 is 'x'" in caplog.text


@pytest.mark.reliability
def test_a_store_that_fails_mid_record_leaves_a_failed_run_and_a_working_job(tracked, caplog, monkeypatch):
    job = _job(tracked.root)
    run = tracking.JobRun(job)
    assert tracked.client.get_run(run.run_id).info.status == "RUNNING"  # opened at the start: a kill leaves it

    def down(*a, **k):
        raise ConnectionError("store is down")

    monkeypatch.setattr(run.client, "log_batch", down)
    assert run.finish(Outcome(metrics={"a": 1.0}), "FINISHED", 1.0) is None
    assert tracked.client.get_run(run.run_id).info.status == "FAILED"
    assert "could not record this job's run" in caplog.text and "ConnectionError: store is down" in caplog.text


@pytest.mark.reliability
def test_an_unreachable_store_leaves_the_job_untracked(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.ENV_URI, "http://127.0.0.1:9")
    monkeypatch.setenv(tracking.ENV_EXPERIMENT, "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = tracking.JobRun(_job(tmp_path))
    assert run.run_id is None and run.finish(Outcome(), "FINISHED", 0.1) is None
    assert "could not open this job's run" in caplog.text


@pytest.mark.reliability
def test_runs_of_a_killed_invocation_are_marked_killed_at_the_next_start(tracked, monkeypatch):
    # a killed invocation: its parent (a dead process) and one job run left RUNNING
    dead = tracking.Process(tracking.Process.this().host, 1, "0")
    client, exp = tracked.client, tracked.env[tracking.ENV_EXPERIMENT]
    old_parent = tracked.env[tracking.ENV_PARENT]
    client.set_tag(old_parent, "nexplain.process", str(dead))
    orphan = tracking.JobRun(_job(tracked.root)).run_id
    other = client.create_run(exp, tags={"nexplain.kind": "workflow", "nexplain.workdir": "/elsewhere"}).info.run_id
    env = tracking.start_workflow({"experiment": "t"}, tracked.root, tracked.root, "snakemake --cores 2")
    status = {r: client.get_run(r).info.status for r in (old_parent, orphan, other, env[tracking.ENV_PARENT])}
    assert status == {old_parent: "KILLED", orphan: "KILLED", other: "RUNNING", env[tracking.ENV_PARENT]: "RUNNING"}
    live = tracking.JobRun(_job(tracked.root)).run_id  # a job of the live run
    tracking.end_workflow(ok=False)
    assert client.get_run(live).info.status == "KILLED"
    assert client.get_run(env[tracking.ENV_PARENT]).info.status == "FAILED"
