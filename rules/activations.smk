# Activation tables: one job per (model, dataset, layer), forward hooks on a dotted layer name.


rule activations:
    input:
        unpack(model_weights),
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        root=dataset_root,
    output:
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/summary.parquet",
        maps=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/maps.parquet",
    log:
        f"logs/activations/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/activations/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        reader=lambda wc: reader_kind(wc.dataset),
        compute=compute("activations"),
        reduce=EXTRACT["reduce"],
        max_row_group_mb=EXTRACT["max_row_group_mb"],
        threads=config["threads"],
        code=code("activations"),
    threads: config["threads"]
    resources:
        **rule_resources("activations"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/activations.py"
