# Counterfactuals (docs/causal.md): the world's renderer draws each sampled image with and without
# every concept it can toggle; how much each explanation's concepts move its unit, and how often
# pasting a class's explained concepts flips the model's prediction. World datasets only.


rule causal:
    input:
        unpack(model_weights),
        unpack(causal_inputs),
        manifest=f"{RESULTS}/models/{{model}}/model.json",
        root=dataset_root,
    output:
        effects=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/causal/effects.parquet",
        efficacy=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/causal/efficacy.parquet",
        paste=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/causal/paste.parquet",
        gallery=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/causal/paste.png",
                       caption="../report/paste.rst", category="Counterfactuals", subcategory="{model} {layer}"),
    log:
        f"logs/causal/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/causal/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        formulas=lambda wc: report_names(wc)["formulas"],
        linear=lambda wc: report_names(wc)["linear"],
        images=lambda wc: CAUSAL["images"],
        min_effect=lambda wc: CAUSAL["min_effect"],
        paste=lambda wc: CAUSAL["paste"],
        seed=lambda wc: CAUSAL["seed"],
        threads=config["threads"],
        code=code("causal"),
    threads: config["threads"]
    resources:
        **rule_resources("causal"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/causal.py"
