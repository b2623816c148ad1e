"""MLflow records: one parent run per workflow invocation, one child run per Snakemake job.

The workflow's `onstart` creates the database, the experiment and the parent run once,
before any job (parallel jobs racing on a fresh SQLite schema corrupt it), and hands
them to the jobs through environment variables. Each job then logs its own child run:
params and metrics in batches, tags naming the rule, wildcards, content hashes of its
inputs and outputs, code version and git commit, and its log and reports as artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nexplain import __version__
from nexplain.errors import NexplainError
from nexplain.hashing import content_hash
from nexplain.tracking.resume import Process

log = logging.getLogger("nexplain.tracking.tracking")

ENV_URI = "NEXPLAIN_MLFLOW_URI"
ENV_EXPERIMENT = "NEXPLAIN_MLFLOW_EXPERIMENT_ID"
ENV_PARENT = "NEXPLAIN_MLFLOW_PARENT_RUN"
ENV_GIT_COMMIT = "NEXPLAIN_GIT_COMMIT"
ENV_GIT_DIRTY = "NEXPLAIN_GIT_DIRTY"

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 100  # MLflow's limit on params per log_batch call


class TrackingError(NexplainError):
    """The tracking server or store can't be used."""


@dataclass
class Outcome:
    """What a job reports besides its outputs: metrics (a list is one value per step, from 1) and artifacts."""

    metrics: dict[str, float | list[float]] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


def tracking_uri(settings: dict, workdir: str | Path) -> str:
    """MLFLOW_TRACKING_URI wins, as MLflow users expect; then the config; then SQLite in the workdir."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri")
            or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail now, before any job, if an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            if r.status == 200:
                return
            reason = f"HTTP {r.status}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(getattr(e, "reason", e))
    raise TrackingError(
        f"MLflow tracking server {uri} does not answer ({reason}). Start it, point "
        "MLFLOW_TRACKING_URI or mlflow.tracking_uri in the config at one that answers, "
        "or set mlflow.enabled: false.")


def git_state(basedir: str | Path) -> tuple[str, bool]:
    """(commit, dirty) of the workflow's code; ("unknown", False) outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(basedir), *args], capture_output=True, text=True, check=True).stdout
    try:
        return git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def start_workflow(settings: dict, workdir: str | Path, basedir: str | Path, command: str) -> dict[str, str]:
    """Create the store, the experiment and the parent run; export them to the jobs' environment."""
    from mlflow import MlflowClient

    uri = tracking_uri(settings, workdir)
    check_reachable(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # MLflow's default backoff waits minutes
    client = _retry(MlflowClient, uri)  # a SQLite store gets its schema here, once
    name = settings.get("experiment", "nexplain")
    exp = _retry(client.get_experiment_by_name, name)
    if exp is None:
        artifacts = (Path(workdir).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        exp_id = _retry(client.create_experiment, name, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    killed = mark_killed_runs(client, exp_id, workdir)
    if killed:
        log.warning("MLflow: marked %d run(s) of killed invocations KILLED", killed)
    commit, dirty = git_state(basedir)
    tags = {"nexplain.kind": "workflow", "nexplain.command": command, "nexplain.version": __version__,
            "nexplain.process": str(Process.this()),
            "nexplain.git_commit": commit, "nexplain.git_dirty": str(dirty).lower(),
            "nexplain.workdir": str(Path(workdir).resolve()), "mlflow.source.git.commit": commit}
    parent = _retry(client.create_run, exp_id, run_name="workflow", tags=tags)
    env = {ENV_URI: uri, ENV_EXPERIMENT: exp_id, ENV_PARENT: parent.info.run_id,
           ENV_GIT_COMMIT: commit, ENV_GIT_DIRTY: str(dirty).lower()}
    os.environ.update(env)
    log.info("MLflow: %s, experiment %s, parent run %s", uri, name, parent.info.run_id)
    return env


def end_workflow(ok: bool) -> None:
    if ENV_PARENT not in os.environ:
        return
    from mlflow import MlflowClient

    client = MlflowClient(os.environ[ENV_URI])
    parent = os.environ[ENV_PARENT]
    try:
        for child in _running(client, os.environ[ENV_EXPERIMENT], f"tags.mlflow.parentRunId = '{parent}'"):
            _retry(client.set_terminated, child.info.run_id, "KILLED")  # jobs stopped with the workflow
        _retry(client.set_terminated, parent, "FINISHED" if ok else "FAILED")
    except Exception as e:  # the results are made; a record that fails must not fail the run
        log.warning("MLflow: could not close the workflow's run %s (%s)", parent, _short(e))


def mark_killed_runs(client, experiment_id: str, workdir: str | Path) -> int:
    """RUNNING runs of this workdir whose invocation's process is gone, and their RUNNING jobs, become KILLED."""
    where = f"tags.`nexplain.workdir` = '{Path(workdir).resolve()}'"
    runs = _running(client, experiment_id, where)
    dead = {r.info.run_id for r in runs if r.data.tags.get("nexplain.kind") == "workflow"
            and not ((p := Process.parse(r.data.tags.get("nexplain.process", ""))) and p.alive())}
    live = {r.info.run_id for r in runs if r.data.tags.get("nexplain.kind") == "workflow"} - dead
    stale = [r for r in runs if r.info.run_id in dead
             or (r.data.tags.get("nexplain.kind") == "job" and r.data.tags.get("mlflow.parentRunId") not in live)]
    for r in stale:
        _retry(client.set_terminated, r.info.run_id, "KILLED")
    return len(stale)


def _running(client, experiment_id: str, where: str) -> list:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = _retry(client.search_runs, [experiment_id], f"attributes.status = 'RUNNING' and {where}",
                      run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


class JobRun:
    """A job's child run: opened RUNNING when the job starts (a killed job keeps its run, which the
    next start marks KILLED), closed with the job's params, metrics and hashes when it ends.

    Recording never breaks a job: any tracking failure is a warning, and the run is closed FAILED
    where the store still answers.
    """

    def __init__(self, snakemake):
        self.snakemake, self.run_id, self.client = snakemake, None, None
        if ENV_URI not in os.environ:
            return
        try:
            from mlflow import MlflowClient

            self.client = MlflowClient(os.environ[ENV_URI])
            tags = {"mlflow.parentRunId": os.environ.get(ENV_PARENT, ""),
                    "mlflow.source.name": f"scripts/{snakemake.rule}.py",
                    "mlflow.source.git.commit": os.environ.get(ENV_GIT_COMMIT, ""),
                    "nexplain.kind": "job", "nexplain.rule": snakemake.rule,
                    "nexplain.wildcards": json.dumps(dict(snakemake.wildcards.items()), sort_keys=True),
                    "nexplain.workdir": str(Path.cwd().resolve())}
            run = _retry(self.client.create_run, os.environ[ENV_EXPERIMENT], run_name=_run_name(snakemake),
                         tags={k: v for k, v in tags.items() if v})
            self.run_id = run.info.run_id
        except Exception as e:
            log.warning("MLflow: could not open this job's run (%s); the job goes on untracked", _short(e))

    def finish(self, outcome: Outcome, status: str, wall_s: float, record: dict | None = None) -> str | None:
        """Log and close the run; returns its id, or None when untracked or the store failed."""
        if self.run_id is None:
            return None
        try:
            self._log(outcome, status, wall_s, record or job_record(self.snakemake))
            return self.run_id
        except Exception as e:
            log.warning("MLflow: could not record this job's run %s (%s); marking it FAILED",
                        self.run_id, _short(e))
            try:
                self.client.set_terminated(self.run_id, "FAILED")
            except Exception:
                pass  # the store is down: the next start marks the run KILLED
            return None

    def _log(self, outcome: Outcome, status: str, wall_s: float, record: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        t0 = time.perf_counter()
        tags = [RunTag(f"nexplain.{k}", v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                for k, v in record.items() if k != "params"]
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in record["params"].items()]
        metrics = [Metric("wall_s", wall_s, now, 0)]
        for key, value in outcome.metrics.items():
            steps = enumerate(value, start=1) if isinstance(value, (list, tuple)) else [(0, value)]
            for step, v in steps:
                try:
                    metrics.append(Metric(key, float(v), now, step))
                except (TypeError, ValueError):
                    log.warning("MLflow: metric %s%s is %r, not a number; not logged",
                                key, f" step {step}" if step else "", v)
        for i in range(0, max(len(params), len(metrics), len(tags)), BATCH):
            _retry(self.client.log_batch, self.run_id, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH],
                   tags=[t for t in tags[i:i + BATCH] if t.value])
        with tempfile.TemporaryDirectory() as tmp:
            prov = Path(tmp) / "provenance.json"
            prov.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            for path in [prov, *self.snakemake.log, *outcome.artifacts]:
                if Path(path).is_file():
                    _retry(self.client.log_artifact, self.run_id, str(path))
        _retry(self.client.set_terminated, self.run_id, status)
        log.info("MLflow run %s (%s) logged in %.2f s", self.run_id, status, time.perf_counter() - t0)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def job_record(snakemake) -> dict:
    """The provenance of one job: what ran, on what (content hashes), with which code."""
    def hashes(paths):
        return {p: content_hash(p) for p in dict.fromkeys(map(str, paths)) if Path(p).exists()}

    params = {k: v for k, v in snakemake.params.items()}
    return {
        "rule": snakemake.rule,
        "wildcards": dict(snakemake.wildcards.items()),
        "params": flatten(params),
        "inputs": hashes(snakemake.input),
        "outputs": hashes(snakemake.output),
        "code_version": str(params.get("code", "")),
        "git_commit": os.environ.get(ENV_GIT_COMMIT) or git_state(Path.cwd())[0],
        "git_dirty": os.environ.get(ENV_GIT_DIRTY, "unknown"),
        "version": __version__,
        "workdir": str(Path.cwd().resolve()),
    }


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; other values their JSON text, cut to MLflow's limit."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


def _run_name(snakemake) -> str:
    wc = ",".join(f"{k}={v}" for k, v in snakemake.wildcards.items())
    return f"{snakemake.rule}[{wc}]" if wc else snakemake.rule


def _retry(fn, *args, attempts: int = 8, **kwargs):
    """SQLite allows one writer: parallel jobs wait for the lock instead of losing their run."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MlflowException wraps sqlite3.OperationalError
            if "locked" not in str(e).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)
