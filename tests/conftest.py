"""The one whole tiny run that test_dvc and test_workflow share (a run costs about 3.5 min of CI)."""

import pytest

from workflow_copy import dvc_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(workflow dir, `dvc repro` log): the tiny config run end to end through DVC and Snakemake, in a git repo.
    Tests that edit the copy put it back, or leave it up to date (test_dvc reruns what its edits touch)."""
    wf = tmp_path_factory.mktemp("tiny") / "repo"
    return wf, dvc_run(wf)
