"""Files a job logs to the workflow's parent MLflow run (the score report's tables, figures, pages),
so the run of one invocation holds its whole report.

Kept apart from `nexplain.tracking.tracking`: every rule's code version hashes that module, so a change
there would rerun the whole pipeline; only the report's rules import this one.
"""

from __future__ import annotations

import os
from pathlib import Path

from nexplain.tracking.tracking import ENV_PARENT, ENV_URI, _retry


def log_parent_artifacts(folder: str, paths) -> str | None:
    """Each file into `folder`, each directory's files into `folder/<name>/...` (hidden files, such as
    Snakemake's timestamp markers, left out); paths that do not exist are skipped. Returns the parent
    run id, or None when the workflow runs untracked."""
    parent = os.environ.get(ENV_PARENT)
    if not parent or ENV_URI not in os.environ:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(os.environ[ENV_URI])
    for path in map(Path, paths):
        if path.is_file():
            _retry(client.log_artifact, parent, str(path), folder)
            continue
        files = sorted(path.rglob("*")) if path.is_dir() else []
        for f in files:
            rel = f.relative_to(path)
            if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                _retry(client.log_artifact, parent, str(f), "/".join([folder, path.name, *rel.parts[:-1]]))
    return parent
