"""Shared storage on S3: a DVC remote, and Snakemake's S3 storage plugin for the workflow's inputs and outputs.

Both run against moto's S3 server on 127.0.0.1 (services/s3.py). A second local moto server is the
"default" endpoint (AWS_ENDPOINT_URL, where boto3 goes when nothing else is set, i.e. the public cloud
outside tests): every test checks it received nothing, so the endpoint really came from the setting under test.
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.s3 import UNSET, S3Server, aws_env, storage_env
from workflow_copy import copy_workflow, digests, dvc, run, snakemake

BUCKET = "nexplain-test"
TARGET = "results/world/concepts"  # the world (a directory output) and its concept tables (a directory input)
# tiny.yaml with the smallest world the schema allows: fewer objects to move, same code paths
SMALL = "datasets:\n  world:\n    generate: {n_images: 10}\n"
UNTRACKED = "mlflow: {enabled: false}\n"  # for the baseline, and under SLURM (MLflow with S3 is checked once)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(server, decoy): the S3 server under test and the default endpoint that must stay untouched; this
    process and its children get dummy credentials, no ~/.aws files, AWS_ENDPOINT_URL = the decoy."""
    tmp = tmp_path_factory.mktemp("s3")
    with S3Server(tmp, "server") as server, S3Server(tmp, "decoy") as decoy, pytest.MonkeyPatch.context() as mp:
        for var in (*UNSET, "MLFLOW_TRACKING_URI", *[v for v in os.environ if v.startswith("SNAKEMAKE_STORAGE_")]):
            mp.delenv(var, raising=False)
        for var, value in aws_env(tmp, decoy.url).items():
            mp.setenv(var, value)
        yield server, decoy
        assert decoy.buckets() == [], "something used the default endpoint instead of the configured one"


def storage_flags(prefix: str) -> list[str]:
    return ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/{prefix}"]


def small_workflow(wf: Path) -> Path:
    copy_workflow(wf)
    (wf / "small.yaml").write_text(SMALL)
    (wf / "untracked.yaml").write_text(UNTRACKED)
    return wf


def sm(wf: Path, *args, configs=("tiny.yaml", "small.yaml"), **env):
    return snakemake(wf, *args, "--configfile", *configs, configfile=None, **env)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same target run plainly (no storage), in the background; `.result()` is its workdir."""
    wf = small_workflow(tmp_path_factory.mktemp("local") / "wf")

    def plain():
        sm(wf, TARGET, configs=("tiny.yaml", "small.yaml", "untracked.yaml"))
        return wf

    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(plain)


def sha256s(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def test_dvc_remote_on_s3_push_then_pull_restores_identical_bytes(s3, tmp_path):
    server, decoy = s3
    repo = tmp_path / "repo"
    (repo / "data" / "dir").mkdir(parents=True)
    (repo / "data" / "dir" / "a.bin").write_bytes(os.urandom(300_000))
    (repo / "data" / "dir" / "b.txt").write_text("some text\n" * 100)
    (repo / "model.bin").write_bytes(os.urandom(50_000))
    files = [repo / "data" / "dir" / "a.bin", repo / "data" / "dir" / "b.txt", repo / "model.bin"]
    before = sha256s(files)

    run(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    with open(repo / ".dvc" / "config", "a") as f:  # no update checks, no analytics (as the project's .dvc/config)
        f.write("[core]\n    analytics = false\n    check_update = false\n")
    dvc(repo, "add", "-q", "data", "model.bin")
    server.create_bucket(BUCKET)  # DVC does not create buckets
    dvc(repo, "remote", "add", "-d", "store", f"s3://{BUCKET}/dvc")
    dvc(repo, "remote", "modify", "--local", "store", "endpointurl", server.url)  # .dvc/config.local: not in git
    dvc(repo, "push")
    assert len(server.keys(BUCKET, "dvc/files/md5/")) == 3 + 1  # three files and the directory's listing

    for p in files:
        p.unlink()
    run(repo, "rm", "-rf", ".dvc/cache")
    dvc(repo, "pull")
    assert sha256s(files) == before
    assert decoy.buckets() == []


def test_snakemake_s3_storage_from_env_matches_a_local_run(s3, local_run, tmp_path):
    """Outputs (directory outputs too) go to the bucket and only there; a directory input (`root=`) is read
    from the storage's local copy; the bytes equal a plain local run's; MLflow still logs every job (its
    store stays local)."""
    server, decoy = s3
    wf = small_workflow(tmp_path / "wf")
    sm(wf, TARGET, *storage_flags("main"), **storage_env(server))  # settings: env vars only

    local = local_run.result()
    assert not (wf / "results").exists(), "outputs were written to the workdir, not to storage"
    got = server.download(BUCKET, "main", tmp_path / "bucket")
    for out in ("results/datasets/world", TARGET):
        assert digests(got / out) == digests(local / out), out
    assert (got / "logs" / "concepts" / "world.log").is_file()  # logs and benchmarks go to storage as well
    assert decoy.buckets() == []

    from mlflow import MlflowClient

    from nexplain.hashing import content_hash

    client = MlflowClient(f"sqlite:///{wf}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("nexplain").experiment_id])
    jobs = {r.data.tags["mlflow.runName"]: r for r in runs if r.data.tags.get("nexplain.kind") == "job"}
    assert sorted(jobs) == ["concepts[dataset=world]", "world[dataset=world]"]
    assert all(r.info.status == "FINISHED" for r in runs)
    outputs = json.loads(jobs["concepts[dataset=world]"].data.tags["nexplain.outputs"])
    # the job saw the storage's local copy (.snakemake/storage/s3/<bucket>/<prefix>/results/...), same bytes
    assert list(outputs.values()) == [content_hash(local / TARGET)]
