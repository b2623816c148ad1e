# Around the jobs of an invocation:
#  - resuming after a kill with the same command: Snakemake's stale locks and the temporaries of
#    killed jobs are cleared when no other run is alive (nexplain.tracking.resume); incomplete outputs
#    rerun (profiles/default: rerun-incomplete);
#  - artifacts edited by hand since their job wrote them are refused before any job (nexplain.tracking.records);
#  - the end of a successful run prints where the results are and their headline numbers;
#  - MLflow: the store, the experiment and one parent run per invocation are created before any
#    job starts; every job then logs its own child run (nexplain.runner).
import os
import shlex

from nexplain.config import mlflow_settings
from nexplain.report import run_summary
from nexplain.tracking import records, resume, tracking

MLFLOW = mlflow_settings(config)

if workflow.is_main_process:
    resume.prepare(workdir=".", results=RESULTS)


def refuse_edited_artifacts():
    """Outputs whose content no longer matches their job's record, unless this run regenerates them."""
    regenerated = {str(f) for job in workflow.dag.needrun_jobs() for f in job.output}
    edits = records.edited(".", skip=regenerated)
    if edits:
        raise WorkflowError(records.refusal(edits))


onstart:
    refuse_edited_artifacts()
    if MLFLOW["enabled"]:
        try:
            tracking.start_workflow(MLFLOW, workdir=os.getcwd(), basedir=workflow.basedir,
                                    command=shlex.join(sys.argv))
        except tracking.TrackingError as e:
            raise WorkflowError(str(e)) from None


onsuccess:
    tracking.end_workflow(ok=True)
    try:
        print(run_summary.summary(config), file=sys.stderr)
    except Exception as e:  # a summary is a courtesy; the run itself succeeded
        print(f"nexplain: no results summary ({type(e).__name__}: {e})", file=sys.stderr)


onerror:
    tracking.end_workflow(ok=False)
