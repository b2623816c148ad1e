"""The tiny workflow through a real SLURM cluster with profiles/slurm, tracked on a real MLflow server.

tests/services/slurm.py starts munged, slurmctld and slurmd from Debian's packages (installed here when missing,
about 12 s) and tests/services/mlflow_server.py an `mlflow server`; Snakemake submits with
`--profile profiles/slurm` (executor: slurm), so every job is an sbatch job whose `srun` runs it.

A subset of the tiny config: LE(label) of layer4, with all it needs (world, concepts, model training and its
manifest, activations, label matrix, splits), 8 jobs in 5 levels. Through SLURM each job pays two Snakefile parses
(the sbatch job's Snakemake, then srun's) and waits for the plugin's status polling, which backs off by 10 s while
nothing finishes (checks 2, 14, 36, 68 s after a submission here), so a level costs about 36 s on two busy cores:
the whole tiny run (35 jobs, 11 levels, VLM training on the longest path) would take 7 min or more, and NetDissect
one more level (its shards are temporary: only their merge can be compared) without another path through SLURM.
"""

import json
import re
import sys
import time
from collections import Counter

import pytest

from services.mlflow_server import mlflow_server
from services.s3 import UNSET, S3Server, aws_env, storage_env
from services.slurm import slurm_cluster
from workflow_copy import REPO, copy_workflow, digests, run

PROFILE = REPO / "profiles" / "slurm"
LAYER4 = "results/resnet18_world/world/layer4"
TARGETS = [f"{LAYER4}/explanations/le_label.parquet"]
JOBS = {"world": 1, "concepts": 1, "train_model": 1, "model": 1, "activations": 1, "label_matrix": 1, "splits": 1,
        "linear": 1}
TIMEOUT_S = 900  # a hung submission or status loop ends the test, not CI (the run takes 3-7 min on a shared 2-core machine)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """(SLURM cluster, MLflow server), the server starting while SLURM installs and starts."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), wait=False) as server, slurm_cluster() as cluster:
        yield cluster, server.wait()


@pytest.fixture(scope="module")
def cluster(services):
    return services[0]


@pytest.fixture(scope="module")
def tracking_server(services):
    return services[1]


@pytest.fixture(scope="module")
def slurm_run(cluster, tracking_server, tmp_path_factory):
    """(workflow copy, Snakemake's log, run id, seconds) of the subset run once through SLURM."""
    wf = copy_workflow(tmp_path_factory.mktemp("slurm") / "wf")
    t0 = time.perf_counter()
    proc = run(wf, "timeout", "-s", "KILL", TIMEOUT_S, sys.executable, "-m", "snakemake",
               "--profile", PROFILE, "--configfile", "tiny.yaml",
               # this cluster has no accounting database: squeue, kept honest by MinJobAge (1200 s) >= 3 x 2 s
               "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
               "--seconds-between-status-checks", "1", "--latency-wait", "5",
               "--retries", "0",  # a failure shows at once instead of a second try
               *TARGETS, check=False, MLFLOW_TRACKING_URI=tracking_server.uri, **cluster.env)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, (f"exit {proc.returncode} after {seconds:.0f} s (-9: killed at {TIMEOUT_S} s)\n"
                                  f"{log[-6000:]}\n{cluster.logs()}\n--- mlflow\n{tracking_server.log()}")
    run_id = re.search(r"SLURM run ID: (\S+)", log)[1]
    print(f"\nSLURM install {cluster.timings['install_s']:.1f} s, daemons {cluster.timings['start_s']:.1f} s, "
          f"mlflow server {tracking_server.start_s:.1f} s (meanwhile), workflow through SLURM {seconds:.1f} s")
    return wf, log, run_id, seconds


def _job_stats(log: str) -> dict[str, int]:
    table = log.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_every_job_went_through_sbatch(slurm_run, cluster):
    """One SLURM job per Snakemake job (no rule here is local), each COMPLETED, found in the job-completion log."""
    wf, log, run_id, _ = slurm_run
    assert _job_stats(log) == JOBS
    done = [j for j in cluster.completed_jobs() if j["Name"] == run_id]
    assert len(done) == sum(JOBS.values())
    assert {j["JobState"] for j in done} == {"COMPLETED"} and {j["Partition"] for j in done} == {"nexplain"}
    assert "UNLIMITED" not in {j["TimeLimit"] for j in done}  # runtime reached sbatch -t
    # the plugin writes rule_<rule>[_wildcards_...] in each job's comment; squeue keeps them MinJobAge long
    rules = Counter(re.match(r"rule_(\w+?)(_wildcards_|$)", j["comment"])[1]
                    for j in cluster.queue() if j["name"] == run_id)
    assert rules == JOBS


def test_outputs_are_byte_identical_to_the_local_run(slurm_run, tiny_run):
    """Same config, same bytes: the SLURM run's files against the shared tiny run's (a DVC copy, whose config.yaml
    is tiny.yaml merged over config.yaml: this also checks that it means the same as `--configfile tiny.yaml`)."""
    wf = slurm_run[0]
    slurm, local = digests(wf / "results"), digests(tiny_run[0] / "results")
    assert len(slurm) > 20 and set(slurm) <= set(local)
    assert [k for k in slurm if slurm[k] != local[k]] == []
    for target in TARGETS:
        assert target.removeprefix("results/") in slurm
    # and the same params (code versions included) in Snakemake's record of every output
    records = sorted((wf / ".snakemake" / "metadata").iterdir())
    assert len(records) >= sum(JOBS.values())
    for record in records:
        ours, theirs = (json.loads(p.read_text()) for p in (record, tiny_run[0] / ".snakemake/metadata" / record.name))
        assert (ours["rule"], ours["params"]) == (theirs["rule"], theirs["params"])


def test_one_finished_parent_run_and_one_child_run_per_job(slurm_run, tracking_server):
    """The NEXPLAIN_MLFLOW_* variables that onstart exports reach the SLURM jobs (sbatch --export=ALL, then srun):
    every job's child run hangs under the invocation's parent run, none lost, none extra."""
    from mlflow import MlflowClient

    wf = slurm_run[0]
    client = MlflowClient(tracking_server.uri)
    exp = client.get_experiment_by_name("nexplain")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nexplain.kind") == "workflow"]
    children = [r for r in runs if r.data.tags.get("nexplain.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["nexplain.workdir"] == str(wf.resolve())
    assert len(runs) == 1 + len(children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    assert Counter(r.data.tags["nexplain.rule"] for r in children) == JOBS


def test_slurm_jobs_store_to_s3_with_settings_from_the_environment(cluster, tiny_run, tmp_path, monkeypatch):
    """A SLURM job is a fresh Snakemake that stores its own outputs; command-line flags never reach it, so the
    S3 settings must come from the environment sbatch exports. The world (one job, a directory output) goes to
    moto's server through SLURM; AWS_ENDPOINT_URL points at a decoy server standing in for the public cloud,
    which must receive nothing. The bucket's bytes equal the local tiny run's."""
    for var in UNSET:
        monkeypatch.delenv(var, raising=False)
    bucket, target = "nexplain-slurm", "results/datasets/world"
    with S3Server(tmp_path, "server") as server, S3Server(tmp_path, "decoy") as decoy:
        wf = copy_workflow(tmp_path / "wf")
        (wf / "untracked.yaml").write_text("mlflow: {enabled: false}\n")
        proc = run(wf, "timeout", "-s", "KILL", TIMEOUT_S, sys.executable, "-m", "snakemake",
                   "--profile", PROFILE, "--configfile", "tiny.yaml", "untracked.yaml",
                   "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                   "--seconds-between-status-checks", "1", "--latency-wait", "5", "--retries", "0",
                   "--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{bucket}/run",
                   target, check=False, **aws_env(tmp_path, decoy.url), **storage_env(server), **cluster.env)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n{cluster.logs()}"
        assert not (wf / "results").exists(), "outputs were written to the workdir, not to storage"
        got = server.download(bucket, "run", tmp_path / "bucket")
        local = tiny_run[0]
        ours = digests(got / target)
        assert len(ours) > 100 and ours == digests(local / target)
        assert decoy.buckets() == []
