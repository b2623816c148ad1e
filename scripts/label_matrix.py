"""Label-mode concept matrix: image-level presence of every concept, plus classes."""
from nexplain.data.folder import open_dataset
from nexplain.linear.conceptmatrix import label_matrix, write_matrix
from nexplain.runner import run_rule
from nexplain.tracking.tracking import Outcome


def main(snakemake):
    p, inp = snakemake.params, snakemake.input
    table = open_dataset(p.reader, inp.root)
    df = label_matrix(inp.concepts, table.labels, table.class_names, p.superclasses)
    write_matrix(df, snakemake.output[0], {"source": "label", "dataset": snakemake.wildcards.dataset})
    return Outcome(metrics={"n_concepts": df.shape[1] - 1, "n_images": len(df)})


run_rule(snakemake, main)
