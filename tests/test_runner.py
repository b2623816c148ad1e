"""nexplain.runner: a job's one-line errors, and a record that fails without failing the job."""

import logging
from types import SimpleNamespace

import pytest
from snakemake.iocontainers import Namedlist

from nexplain.errors import DataError
from nexplain.runner import run_rule
from nexplain.tracking import records, tracking
from nexplain.tracking.tracking import Outcome


def _job(root):
    return SimpleNamespace(rule="train_model", wildcards=Namedlist(fromdict={"model": "m"}),
                           params=Namedlist(fromdict={"code": "0123"}), input=Namedlist([]),
                           output=Namedlist([str(root / "out.json")]), log=Namedlist([str(root / "job.log")]))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in (tracking.ENV_URI, tracking.ENV_EXPERIMENT, tracking.ENV_PARENT, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path
    logging.getLogger().handlers.clear()  # run_rule's file handler


@pytest.mark.reliability
def test_a_metric_of_none_keeps_the_finished_job_and_its_outputs(workdir, monkeypatch):
    env = tracking.start_workflow({"experiment": "t"}, workdir, workdir, "snakemake")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    job = _job(workdir)

    def main(snakemake):
        (workdir / "out.json").write_text("{}")
        return Outcome(metrics={"test_accuracy": None})

    run_rule(job, main)  # no exception, no SystemExit: Snakemake keeps the outputs
    assert (workdir / "out.json").read_text() == "{}"
    assert records.load(workdir / "out.json", workdir)["hash"].startswith("sha256:")
    log = (workdir / "job.log").read_text()
    assert "metric test_accuracy is None, not a number; not logged" in log and "FINISHED" in log


@pytest.mark.reliability
def test_a_data_error_ends_the_job_with_its_one_line_message(workdir, capsys):
    def main(snakemake):
        raise DataError("world/images/3.png: image file is truncated")

    with pytest.raises(SystemExit) as exit_:
        run_rule(_job(workdir), main)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "ERROR nexplain: world/images/3.png: image file is truncated"
