# Probe data: the generated world, and concept tables for any Broden-format dataset.


rule world:
    output:
        directory(f"{RESULTS}/datasets/{{dataset}}"),
    log:
        f"logs/world/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/world/{{dataset}}.tsv"
    params:
        generate=lambda wc: DATASETS[wc.dataset]["generate"],
        code=code("world"),
    threads: 1
    resources:
        **rule_resources("world"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/world.py"


rule concepts:
    input:
        root=dataset_root,
    output:
        directory(f"{RESULTS}/{{dataset}}/concepts"),
    log:
        f"logs/concepts/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/concepts/{{dataset}}.tsv"
    params:
        code=code("concepts"),
    threads: 1
    resources:
        **rule_resources("concepts"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/concepts.py"
