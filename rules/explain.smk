# Compositional explanations: NetDissect, CoEx, Clustered CoEx per (model, dataset, layer, method).
# Each layer's units split over `explain.shards` jobs; a merge writes the layer's table.


rule geometry:
    input:
        f"{RESULTS}/{{dataset}}/concepts",
    output:
        f"{RESULTS}/{{dataset}}/geometry.npz",
    log:
        f"logs/geometry/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/geometry/{{dataset}}.tsv"
    params:
        code=code("geometry"),
    threads: 1
    resources:
        **rule_resources("geometry"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/geometry.py"


rule explain:
    input:
        maps=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/maps.parquet",
        concepts=f"{RESULTS}/{{dataset}}/concepts",
        geometry=f"{RESULTS}/{{dataset}}/geometry.npz",
    output:
        temp(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}.part{{shard}}.parquet"),
    log:
        log=f"logs/explain/{{model}}/{{dataset}}/{{layer}}/{{method}}.part{{shard}}.log",
        seconds=f"logs/explain/{{model}}/{{dataset}}/{{layer}}/{{method}}.part{{shard}}.seconds.parquet",
    benchmark:
        f"logs/benchmarks/explain/{{model}}/{{dataset}}/{{layer}}/{{method}}.part{{shard}}.tsv"
    params:
        settings=lambda wc: method_settings(wc.method),
        units=EXPLAIN.get("units", "all"),
        shard=lambda wc: shard_of(wc.shard),
        threads=config["threads"],
        code=code("explain"),
    threads: config["threads"]
    resources:
        **rule_resources("explain"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/explain.py"


rule merge_explanations:
    input:
        shard_parts("explain", f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}"),
    output:
        table=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}.parquet",
        scores=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}.scores.json",
    log:
        f"logs/merge_explanations/{{model}}/{{dataset}}/{{layer}}/{{method}}.log",
    benchmark:
        f"logs/benchmarks/merge_explanations/{{model}}/{{dataset}}/{{layer}}/{{method}}.tsv"
    params:
        settings=lambda wc: method_settings(wc.method),
        code=code("merge_explanations"),
    threads: 1
    resources:
        **rule_resources("merge_explanations"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/merge_explanations.py"


rule label_masking:
    input:
        unpack(model_weights),
        explanations=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}.parquet",
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        concepts=f"{RESULTS}/{{dataset}}/concepts",
        geometry=f"{RESULTS}/{{dataset}}/geometry.npz",
        root=dataset_root,
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/{{method}}.label_masking.parquet",
    log:
        f"logs/label_masking/{{model}}/{{dataset}}/{{layer}}/{{method}}.log",
    benchmark:
        f"logs/benchmarks/label_masking/{{model}}/{{dataset}}/{{layer}}/{{method}}.tsv"
    params:
        label_masking=EXPLAIN.get("label_masking"),
        strict=lambda wc: wc.method == "clustered" and EXPLAIN["clustered"]["ranges"] == "strict",
        reader=lambda wc: reader_kind(wc.dataset),
        threads=config["threads"],
        compute=compute("label_masking"),
        code=code("label_masking"),
    threads: config["threads"]
    resources:
        **rule_resources("label_masking"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/label_masking.py"
