"""Resolve and load a model (trained, checkpoint, torchvision, open_clip); write its manifest."""
from nexplain.activations.hooks import list_layers
from nexplain.models.load import load_model
from nexplain.models.manifest import manifest, resolve_spec, write_manifest
from nexplain.runner import run_rule


def main(snakemake):
    inp = snakemake.input
    spec = resolve_spec(snakemake.params.spec, inp.get("checkpoint"), inp.get("metrics"))
    loaded = load_model(spec)
    write_manifest(snakemake.output[0], manifest(snakemake.wildcards.model, spec, loaded.module, list_layers(loaded.module)))


run_rule(snakemake, main)
