"""Area-chart data: per unit and activation bucket, the share of each label."""
from nexplain.activations.read import read_summary
from nexplain.linear.conceptmatrix import read_matrix
from nexplain.linear.impact import area_chart
from nexplain.linear.linear import aligned
from nexplain.runner import run_rule
from nexplain.tables import write_table


def main(snakemake):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    ids, Q, _ = read_summary(inp.summary)
    m_ids, P, names, _ = read_matrix(inp.matrix)
    df = area_chart(Q, aligned(ids, m_ids, P, inp.matrix), names, p.buckets)
    write_table(df, snakemake.output[0], {"model": w.model, "dataset": w.dataset, "layer": w.layer,
                                          "buckets": p.buckets})


run_rule(snakemake, main)
