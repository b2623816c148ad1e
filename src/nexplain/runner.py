"""The shared body of every `scripts/*.py`: logging to the rule's log, clean errors, the MLflow run."""

from __future__ import annotations

import logging
import sys
import time

from nexplain.errors import NexplainError, one_line
from nexplain.tracking import records
from nexplain.tracking.tracking import JobRun, Outcome, job_record

log = logging.getLogger("nexplain")


def setup_logging(logfile: str | None = None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


def run_rule(snakemake, main) -> None:
    """Run `main(snakemake)` and record it; a NexplainError ends the job with its one-line message.

    `main` may return an `Outcome` (metrics, artifacts) for the job's MLflow run. Once `main`
    returns, the outputs are complete: nothing after it (content record, MLflow) may fail the job.
    """
    setup_logging(snakemake.log[0] if snakemake.log else None)
    log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    run = JobRun(snakemake)
    start = time.perf_counter()
    try:
        outcome = main(snakemake) or Outcome()
    except NexplainError as e:
        log.error("%s", one_line(e))
        run.finish(Outcome(), "FAILED", time.perf_counter() - start)
        sys.exit(1)
    except BaseException as e:
        run.finish(Outcome(), "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", time.perf_counter() - start)
        raise
    wall_s = time.perf_counter() - start
    log.info("outputs complete in %.1f s; recording the job", wall_s)
    try:
        record = job_record(snakemake)
        records.save(record)
    except Exception as e:
        log.warning("could not record the content hashes of this job's outputs: %s", e)
        record = None
    run.finish(outcome, "FINISHED", wall_s, record)
