# Linear Explanations, simulation scores and Top Impact (docs/methods.md).
# Splits and concept matrices are per dataset; explanations, scores and Top Impact per
# (model, dataset, layer). Simulation and Top Impact split a layer's units over
# `compute.stages.<stage>.shards` jobs; a merge writes the layer's table.


rule splits:
    input:
        f"{RESULTS}/{{dataset}}/concepts",
    output:
        f"{RESULTS}/{{dataset}}/splits.parquet",
    log:
        f"logs/splits/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/splits/{{dataset}}.tsv"
    params:
        split=LINEAR.get("split"),
        code=code("splits"),
    threads: 1
    resources:
        **rule_resources("splits"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/splits.py"


rule label_matrix:
    input:
        concepts=f"{RESULTS}/{{dataset}}/concepts",
        root=dataset_root,
    output:
        f"{RESULTS}/{{dataset}}/concept_matrix/label.parquet",
    log:
        f"logs/label_matrix/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/label_matrix/{{dataset}}.tsv"
    params:
        reader=lambda wc: reader_kind(wc.dataset),
        superclasses=lambda wc: DATASETS[wc.dataset].get("superclasses", {}),
        code=code("label_matrix"),
    threads: 1
    resources:
        **rule_resources("label_matrix"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/label_matrix.py"


rule linear:
    input:
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/summary.parquet",
        matrix=f"{RESULTS}/{{dataset}}/concept_matrix/{{source}}.parquet",
        splits=f"{RESULTS}/{{dataset}}/splits.parquet",
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/explanations/le_{{source}}.parquet",
    log:
        f"logs/linear/{{model}}/{{dataset}}/{{layer}}/{{source}}.log",
    benchmark:
        f"logs/benchmarks/linear/{{model}}/{{dataset}}/{{layer}}/{{source}}.tsv"
    params:
        settings=linear_settings(),
        concept_filter=LINEAR.get("concept_filter"),
        threads=config["threads"],
        code=code("linear"),
    threads: config["threads"]
    resources:
        **rule_resources("linear"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/linear.py"


rule simulate:
    input:
        unpack(model_weights),
        unpack(layer_activations),
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        splits=f"{RESULTS}/{{dataset}}/splits.parquet",
        simulator=f"{RESULTS}/{{dataset}}/concept_matrix/{{simulator}}.parquet",
        root=dataset_root,
        explanations=lambda wc: list(simulated_explanations(wc).values()),
    output:
        temp(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/simulation.{{simulator}}.part{{shard}}.parquet"),
    log:
        f"logs/simulate/{{model}}/{{dataset}}/{{layer}}/{{simulator}}.part{{shard}}.log",
    benchmark:
        f"logs/benchmarks/simulate/{{model}}/{{dataset}}/{{layer}}/{{simulator}}.part{{shard}}.tsv"
    params:
        simulate=LINEAR.get("simulate"),
        explainers=lambda wc: list(simulated_explanations(wc)),
        template=zero_shot_template,
        reader=lambda wc: reader_kind(wc.dataset),
        shard=lambda wc: shard_of(wc.shard),
        threads=config["threads"],
        compute=compute("simulate"),
        code=code("simulate"),
    threads: config["threads"]
    resources:
        **rule_resources("simulate"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/simulate.py"


rule merge_simulation:
    input:
        shard_parts("simulate", f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/simulation.{{simulator}}"),
    output:
        scores=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/simulation.{{simulator}}.parquet",
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/simulation.{{simulator}}.json",
    log:
        f"logs/merge_simulation/{{model}}/{{dataset}}/{{layer}}/{{simulator}}.log",
    benchmark:
        f"logs/benchmarks/merge_simulation/{{model}}/{{dataset}}/{{layer}}/{{simulator}}.tsv"
    params:
        code=code("merge_simulation"),
    threads: 1
    resources:
        **rule_resources("merge_simulation"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/merge_simulation.py"


rule top_impact:
    input:
        unpack(model_weights),
        unpack(layer_activations),
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        root=dataset_root,
    output:
        temp(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/top_impact.part{{shard}}.parquet"),
    log:
        f"logs/top_impact/{{model}}/{{dataset}}/{{layer}}.part{{shard}}.log",
    benchmark:
        f"logs/benchmarks/top_impact/{{model}}/{{dataset}}/{{layer}}.part{{shard}}.tsv"
    params:
        top_impact=LINEAR.get("top_impact"),
        temperature=LINEAR.get("simulate", {}).get("temperature"),
        replay=LINEAR.get("simulate", {}).get("replay"),
        template=zero_shot_template,
        reader=lambda wc: reader_kind(wc.dataset),
        shard=lambda wc: shard_of(wc.shard),
        threads=config["threads"],
        compute=compute("top_impact"),
        code=code("top_impact"),
    threads: config["threads"]
    resources:
        **rule_resources("top_impact"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/top_impact.py"


rule merge_top_impact:
    input:
        shard_parts("top_impact", f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/top_impact"),
    output:
        table=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/top_impact.parquet",
        figure=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/top_impact.png",
                      caption="../report/top_impact.rst", category="Scores", subcategory="{model} {layer}"),
    log:
        f"logs/merge_top_impact/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/merge_top_impact/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        betas=LINEAR.get("top_impact", {}).get("betas"),
        code=code("merge_top_impact"),
    threads: 1
    resources:
        **rule_resources("merge_top_impact"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/merge_top_impact.py"


rule area_chart:
    input:
        summary=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/activations/summary.parquet",
        matrix=f"{RESULTS}/{{dataset}}/concept_matrix/label.parquet",
    output:
        f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/scores/area_chart.parquet",
    log:
        f"logs/area_chart/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/area_chart/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        buckets=LINEAR.get("area_chart", {}).get("buckets"),
        code=code("area_chart"),
    threads: 1
    resources:
        **rule_resources("area_chart"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/area_chart.py"
