# Progressive specialization (docs/specialization.md): Clustered CoEx on the random init and on
# snapshots of a trained model; each epoch's ranges are unspecialized, weakly specialized or
# specialized against the random init's most frequent formulas.


rule specialization_explain:
    input:
        checkpoint=f"{RESULTS}/models/{{model}}/checkpoint.pt",
        snapshots=f"{RESULTS}/models/{{model}}/snapshots",
        root=dataset_root,
        concepts=f"{RESULTS}/{{dataset}}/concepts",
        geometry=f"{RESULTS}/{{dataset}}/geometry.npz",
    output:
        table=f"{RESULTS}/specialization/{{model}}/{{dataset}}/epoch_{{epoch}}.parquet",
    log:
        f"logs/specialization/{{model}}/{{dataset}}/epoch_{{epoch}}.log",
    benchmark:
        f"logs/benchmarks/specialization/{{model}}/{{dataset}}/epoch_{{epoch}}.tsv"
    params:
        spec=lambda wc: MODELS[wc.model],
        layers=specialization_layers,
        units=lambda wc: SPECIALIZATION["units"],
        settings=lambda wc: method_settings("clustered"),
        reader=lambda wc: reader_kind(wc.dataset),
        threads=config["threads"],
        code=code("specialization_explain"),
    threads: config["threads"]
    resources:
        **rule_resources("specialization_explain"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/specialization_explain.py"


rule specialization:
    input:
        unpack(specialization_tables),
    output:
        table=f"{RESULTS}/specialization/{{model}}/{{dataset}}/specialization.parquet",
        defaults=f"{RESULTS}/specialization/{{model}}/{{dataset}}/defaults.parquet",
        figure=report(f"{RESULTS}/specialization/{{model}}/{{dataset}}/specialization.png",
                      caption="../report/specialization.rst", category="Specialization", subcategory="{model}"),
    log:
        f"logs/specialization/{{model}}/{{dataset}}/merge.log",
    benchmark:
        f"logs/benchmarks/specialization/{{model}}/{{dataset}}/merge.tsv"
    params:
        epochs=lambda wc: specialization_epochs(wc.model),
        share=lambda wc: SPECIALIZATION["share"],
        k=lambda wc: EXPLAIN["clustered"]["k"],
        code=code("specialization"),
    threads: 1
    resources:
        **rule_resources("specialization"),
    conda:
        "../envs/torch.yaml"  # matplotlib
    script:
        "../scripts/specialization.py"
