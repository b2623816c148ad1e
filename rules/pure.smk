# PURE (docs/methods.md): relevances of earlier layers' channels for each unit's top images,
# their circuits, and which earlier layer separates best against a reference embedding.
# Relevances split the units over `compute.stages.relevance.shards` jobs; a merge joins them.


rule relevance:
    input:
        unpack(model_weights),
        maps=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/maps.parquet",
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        root=dataset_root,
    output:
        temp(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/relevance.part{{shard}}.parquet"),
    log:
        f"logs/relevance/{{model}}/{{dataset}}/{{layer}}.part{{shard}}.log",
    benchmark:
        f"logs/benchmarks/relevance/{{model}}/{{dataset}}/{{layer}}.part{{shard}}.tsv"
    params:
        pure=pure_settings(),
        earlier=lambda wc: pure_target(wc)["earlier"],
        reader=lambda wc: reader_kind(wc.dataset),
        shard=lambda wc: shard_of(wc.shard),
        threads=config["threads"],
        compute=compute("relevance"),
        code=code("relevance"),
    threads: config["threads"]
    resources:
        **rule_resources("relevance"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/relevance.py"


rule merge_relevance:
    input:
        shard_parts("relevance", f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/relevance"),
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/relevance.parquet",
    log:
        f"logs/merge_relevance/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/merge_relevance/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        earlier=lambda wc: pure_target(wc)["earlier"],
        code=code("merge_relevance"),
    threads: 1
    resources:
        **rule_resources("merge_relevance"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/merge_relevance.py"


rule pure:
    input:
        unpack(pure_references),
        unpack(pure_concepts),
        unpack(model_weights),
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        relevance=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/relevance.parquet",
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/summary.parquet",
        root=dataset_root,
    output:
        clusters=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/clusters.parquet",
        circuit_concepts=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/circuit_concepts.parquet",
        correlations=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/correlations.parquet",
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/summary.parquet",
        metrics=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/summary.json",
        figure=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/summary.png",
                      caption="../report/pure.rst", category="PURE", subcategory="{model} {layer}"),
        units=report(directory(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/pure/units"), patterns=["unit_{unit}.png"],
                     caption="../report/pure_unit.rst", category="PURE", subcategory="{model} {layer}"),
    log:
        f"logs/pure/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/pure/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        pure=pure_settings(),
        earlier=lambda wc: pure_target(wc)["earlier"],
        reference=PURE.get("reference"),
        ceiling=PURE.get("ceiling"),
        reader=lambda wc: reader_kind(wc.dataset),
        code=code("pure"),
    threads: 1
    resources:
        **rule_resources("pure"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/pure.py"
