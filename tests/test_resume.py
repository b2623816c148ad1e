"""nexplain.tracking.resume, and a real run killed with SIGKILL at several points, then resumed by the same command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from nexplain.io import TEMPORARY
from nexplain.tracking import resume
from workflow_copy import copy_workflow, digests, env

LAYER4 = "results/resnet18_world/world/layer4"
TARGETS = [f"{LAYER4}/explanations/le_label.parquet"]  # world, concepts, training, activations, LE: 8 jobs


def test_a_dead_process_is_dead_and_a_live_one_alive():
    me = resume.Process.this()
    assert me.alive() and resume.Process.parse(str(me)) == me
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not resume.Process(me.host, child.pid, me.started).alive()
    assert not resume.Process(me.host, me.pid, "1").alive()  # the pid, reused by another process
    assert resume.Process("another-host", 1, "1").alive()  # can't tell: left alone
    assert resume.Process.parse("garbage") is None


def test_stale_locks_and_temporaries_go_only_when_no_other_run_is_alive(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    results = tmp_path / "results" / "a"
    results.mkdir(parents=True)
    orphans = [results / ".maps.parquet.k2j_x9ab.tmp", results / ".summary.parquet.abcdefgh.tmp"]
    for o in orphans:
        o.write_bytes(b"partial")
    (results / ".world.q1w2e3r4.tmp").mkdir()  # an atomic_dir's
    keep = [results / "maps.parquet", results / ".snakemake_timestamp", results / ".notes.tmp"]
    for k in keep:
        k.write_bytes(b"keep")

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = resume.Process(resume.Process.this().host, other.pid, resume._start_time(other.pid))
        runs = tmp_path / resume.RUNS
        runs.mkdir(parents=True)
        (runs / "other.json").write_text(f'{{"host": "{live.host}", "pid": {live.pid}, "started": "{live.started}"}}')
        resume.prepare(tmp_path, "results")
        assert (locks / "0.input.lock").exists() and all(o.exists() for o in orphans)  # the other run's
    finally:
        other.kill()
        other.wait()
    resume.prepare(tmp_path, "results")
    assert not list(locks.iterdir()) and not any(o.exists() for o in orphans)
    assert not (results / ".world.q1w2e3r4.tmp").exists() and all(k.exists() for k in keep)
    assert not (runs / "other.json").exists()
    assert (runs / f"{resume.Process.this().host}.{os.getpid()}.json").exists()  # this one, until it exits


# A real run, killed three times and resumed by the same command.

def _command():
    return [sys.executable, "-m", "snakemake", *TARGETS, "--cores", "2", "--configfile", "tiny.yaml"]


def _run_until(wf: Path, condition, timeout_s: float = 300):
    """Start the command; SIGKILL its whole process group (Snakemake and its jobs) once `condition()` holds."""
    out = open(wf / "killed.log", "w")  # a file: a full pipe would stall Snakemake
    proc = subprocess.Popen(_command(), cwd=wf, env=env(wf), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (hit := condition()) is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return hit
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the kill point:\n{(wf / 'killed.log').read_text()[-3000:]}")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("kill point not reached")


def _temporaries(wf):
    return sorted(p for p in (wf / "results").rglob("*") if TEMPORARY.match(p.name))


def _log_with(wf, rule, text):
    for log in (wf / "logs" / rule).rglob("*.log"):
        if text in log.read_text(errors="replace"):
            return log
    return None


def _training(wf):
    """The training job's log, half a second into the job, if its checkpoint is not written yet."""
    checkpoint = wf / "results/models/resnet18_world/checkpoint.pt"
    if (log := _log_with(wf, "train_model", "rule train_model")) is None:
        return None
    time.sleep(0.5)
    assert not checkpoint.exists(), "training ended within half a second: no kill during training"
    return log


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    wf = copy_workflow(tmp_path_factory.mktemp("resume") / "wf")
    seen = {}
    # 1. during a write: a job's temporary beside its output (the world's directory, the first job)
    seen["write"] = _run_until(wf, lambda: _temporaries(wf) or None)
    # 2. during training, before the checkpoint exists
    seen["training"] = _run_until(wf, lambda: _training(wf))
    # 3. during recording: the activations job's outputs are complete, its MLflow run not yet closed
    seen["recording"] = _run_until(wf, lambda: _log_with(wf, "activations", "recording the job"))
    seen["incomplete_after_kill"] = sorted(p.name for p in (wf / ".snakemake" / "incomplete").rglob("*")
                                           if p.is_file())
    resumed = subprocess.run(_command(), cwd=wf, env=env(wf), capture_output=True, text=True)
    return wf, seen, resumed


@pytest.mark.reliability
def test_the_same_command_resumes_after_three_kills(killed_and_resumed, tiny_run):
    wf, seen, resumed = killed_and_resumed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert seen["write"] and seen["training"] and seen["recording"]
    assert seen["incomplete_after_kill"], "the third kill came after Snakemake had closed the job"
    assert "removed" in resumed.stderr and "lock" in resumed.stderr
    local, _ = tiny_run
    for target in ["results/datasets/world", "results/models/resnet18_world", f"{LAYER4}/activations", *TARGETS]:
        ours, ref = wf / target, local / target
        if ours.is_dir():
            assert digests(ours) == digests(ref), target
        else:
            assert ours.read_bytes() == ref.read_bytes(), target


@pytest.mark.reliability
def test_a_resumed_run_leaves_no_temporaries_locks_or_running_records(killed_and_resumed):
    wf, seen, _ = killed_and_resumed
    assert not _temporaries(wf)
    assert not list((wf / ".snakemake" / "locks").glob("*"))
    client = MlflowClient(f"sqlite:///{wf / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    status = {}
    for r in runs:
        status.setdefault((r.data.tags.get("nexplain.kind"), r.info.status), []).append(r)
    assert len(status.get(("workflow", "KILLED"), [])) == 3 and len(status.get(("workflow", "FINISHED"), [])) == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert status.get(("job", "KILLED")), "the jobs killed while running keep a KILLED run"


@pytest.mark.reliability
def test_an_unknown_layer_is_refused_before_any_job_and_outputs_stay(killed_and_resumed, tmp_path):
    wf, _, _ = killed_and_resumed
    before = digests(wf / "results")
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  targets:\n    - {model: resnet18_world, dataset: world, layers: [layer3, layer4, layer5]}\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", *TARGETS, "--cores", "2",
                           "--configfile", "tiny.yaml", str(bad)], cwd=wf, env=env(wf), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "key 'extract.targets.0.layers.2': model 'resnet18_world': unknown layer 'layer5'" in proc.stderr
    assert "Traceback" not in proc.stderr and digests(wf / "results") == before


@pytest.mark.reliability
def test_an_output_edited_by_hand_is_refused_before_it_is_rendered(killed_and_resumed):
    wf, _, _ = killed_and_resumed
    summary = wf / LAYER4 / "activations" / "summary.parquet"
    explanation = (wf / TARGETS[0]).read_bytes()
    original = summary.read_bytes()
    try:
        summary.write_bytes(original[:-8] + bytes(8))  # what a hand edit does: new content, new mtime
        proc = subprocess.run(_command(), cwd=wf, env=env(wf), capture_output=True, text=True)
        assert proc.returncode != 0
        assert (f"{LAYER4}/activations/summary.parquet was changed after rule activations made it"
                in proc.stderr), proc.stderr[-2000:]
        assert f"--forcerun {LAYER4}/activations/summary.parquet" in proc.stderr
        assert (wf / TARGETS[0]).read_bytes() == explanation  # nothing was remade from the edit
    finally:
        summary.write_bytes(original)
