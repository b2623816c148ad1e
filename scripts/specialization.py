"""Progressive specialization of one model on one dataset: each epoch's ranges against the random init's defaults."""
from nexplain.compositional.specialization import default_table, shares
from nexplain.data.concepts import concept_names
from nexplain.report.report_figures import specialization_bars
from nexplain.runner import run_rule
from nexplain.tables import read_table, write_table
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, w, inp, out = snakemake.params, snakemake.wildcards, snakemake.input, snakemake.output
    names = concept_names(inp.concepts)
    tables = {int(e): read_table(path, f"epoch {e} explanations") for e, path in zip(p.epochs, inp.tables)}
    table = shares(tables, names, p.share, p.k)
    meta = {"model": w.model, "dataset": w.dataset, "share": p.share}
    write_table(table, out.table, meta)
    write_table(default_table(tables, names, p.share), out.defaults, meta)
    specialization_bars(out.figure, table)
    last = table[table["epoch"] == max(tables)]
    return Outcome(metrics={f"{r.layer}_range{r.range + 1}_{c}": float(getattr(r, c))
                            for r in last.itertuples() for c in ("unspecialized", "weak")},
                   artifacts=[out.table, out.defaults, out.figure])


run_rule(snakemake, main)
