"""What does recording a job in MLflow cost, and why log in batches?

In a fresh SQLite store, with the world dataset of a finished run as the job's input:
  - one job's record in a fresh process: import mlflow, open the store, child run,
    params + metrics, artifacts (the fixed cost every job pays);
  - content hashes of the job's inputs (the world directory) and of all activation tables;
  - 100 metrics as one log_batch call vs 100 log_metric calls (ratio).

    python benchmarks/bench_tracking.py [--results results]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nexplain.hashing import content_hash

JOB = """
import sys, time
from types import SimpleNamespace
t0 = time.perf_counter()
from snakemake.iocontainers import Namedlist
from nexplain.tracking import tracking
from nexplain.tracking.tracking import Outcome
job = SimpleNamespace(rule="bench", wildcards=Namedlist(fromdict={"model": "m"}),
                      params=Namedlist(fromdict={"train": {"epochs": 7, "lr": 0.05}, "code": "0" * 16}),
                      input=Namedlist([]), output=Namedlist([]), log=Namedlist([]))
tracking.JobRun(job).finish(Outcome(metrics={"test_accuracy": 0.5, "val_accuracy": [0.1] * 7}), "FINISHED", 1.0)
print(time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    args = ap.parse_args()
    results = Path(args.results)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from nexplain.tracking import tracking

    with tempfile.TemporaryDirectory() as tmp:
        env = tracking.start_workflow({"experiment": "bench"}, tmp, tmp, "bench")
        job_s = [float(subprocess.run([sys.executable, "-c", JOB], env={**os.environ, **env}, cwd=tmp,
                                      capture_output=True, text=True, check=True).stdout) for _ in range(3)]
        print(f"one job's record, fresh process (import, store, run, batch): min {min(job_s):.2f} s of {len(job_s)}")

        client = MlflowClient(env[tracking.ENV_URI])
        run = client.create_run(env[tracking.ENV_EXPERIMENT]).info.run_id
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        client.log_batch(run, metrics=[Metric("m", float(i), now, i) for i in range(100)])
        batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(100):
            client.log_metric(run, "n", float(i), now, i)
        single = time.perf_counter() - t0
        print(f"100 metrics: log_batch {batch * 1e3:.1f} ms, 100 x log_metric {single * 1e3:.1f} ms "
              f"({single / 100 * 1e3:.1f} ms each), ratio {single / batch:.1f}x")

    world = results / "datasets" / "world"
    tables = sorted(results.glob("*/*/*/activations/*.parquet"))
    for name, paths in (("world dataset dir", [world]), ("all activation tables", tables)):
        paths = [p for p in paths if p.exists()]
        if not paths:
            print(f"{name}: not found under {results}; run the pipeline first")
            continue
        size = sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
        t0 = time.perf_counter()
        for p in paths:
            content_hash(p)
        dt = time.perf_counter() - t0
        print(f"content hash, {name}: {size / 2**20:.0f} MiB in {dt:.2f} s ({size / 2**20 / dt:.0f} MiB/s)")


if __name__ == "__main__":
    main()
