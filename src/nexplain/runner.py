"""The shared body of every `scripts/*.py`: logging to the rule's log, clean errors."""

from __future__ import annotations

import logging
import sys

from nexplain.errors import NexplainError

log = logging.getLogger("nexplain")


def setup_logging(logfile: str | None = None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


def run_rule(snakemake, main) -> None:
    """Run `main(snakemake)`; a NexplainError ends the job with its message, no traceback."""
    setup_logging(snakemake.log[0] if snakemake.log else None)
    log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    try:
        main(snakemake)
    except NexplainError as e:
        log.error("%s", e)
        sys.exit(1)
