"""Generate the embedded probe world in Broden format."""
from nexplain.data.world import generate_world
from nexplain.runner import run_rule


def main(snakemake):
    g = snakemake.params.generate
    generate_world(snakemake.output[0], n_images=g["n_images"], image_size=g["image_size"],
                   mask_size=g["mask_size"], seed=g["seed"], splits=g["splits"])


run_rule(snakemake, main)
