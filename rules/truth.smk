# Ground truth (docs/truth.md): a copy of a model whose chosen channels are taught known functions
# of the concept masks, every method run on those channels, and graded against the truth with
# sanity rows (untrained weights, shuffled concept labels, a constant explanation).
# `snakemake --cores 2 truth`; not part of the default run.

TRUTH = config.get("truth")


wildcard_constraints:
    variant="planted|random|shuffled",


def truth_dataset():
    return truth_recipe(config)["train"]["dataset"]


def truth_sources():
    """Concept matrices: the label matrix (LE and PURE's circuit names), then `truth.sources`."""
    return list(dict.fromkeys(["label", *TRUTH["sources"]]))


def truth_data(wildcards=None):
    d = truth_dataset()
    return {"root": root_of(d), "concepts": f"{RESULTS}/{d}/concepts", "geometry": f"{RESULTS}/{d}/geometry.npz",
            "matrices": [f"{RESULTS}/{d}/concept_matrix/{s}.parquet" for s in truth_sources()]}


def truth_checkpoint(wildcards):
    """The planted weights, for every variant but the untrained one."""
    return {} if wildcards.variant == "random" else {"checkpoint": f"{RESULTS}/truth/planted/checkpoint.pt"}


def truth_settings():
    """What `nexplain.truth.study.explain_variant` runs: the pipeline's own method settings."""
    pure = {k: PURE[k] for k in ("top", "k", "seed")}
    return {"formula": {m: method_settings(m) for m in ("netdissect", "coex", "clustered")},
            "linear": {"lam": LINEAR["lam"], "alpha": LINEAR["alpha"], **LINEAR["greedy"],
                       "concept_filter": LINEAR["concept_filter"]},
            "pure": {**pure, **TRUTH["pure"]}}


VARIANTS = ["planted", "random", "shuffled"]


rule train_planted:
    input:
        root=lambda wc: truth_data()["root"],
        concepts=lambda wc: truth_data()["concepts"],
    output:
        checkpoint=f"{RESULTS}/truth/planted/checkpoint.pt",
        metrics=f"{RESULTS}/truth/planted/metrics.json",
        planted=f"{RESULTS}/truth/planted.parquet",
    log:
        "logs/truth/train_planted.log",
    benchmark:
        "logs/benchmarks/truth/train_planted.tsv"
    params:
        base=lambda wc: truth_recipe(config),
        units=lambda wc: TRUTH["units"],
        weight=lambda wc: TRUTH["weight"],
        reader=lambda wc: reader_kind(truth_dataset()),
        threads=config["threads"],
        compute=compute("train_model"),
        code=code("train_planted"),
    threads: config["threads"]
    resources:
        **rule_resources("train_model"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train_planted.py"


rule truth_explain:
    input:
        unpack(truth_checkpoint),
        unpack(truth_data),
    output:
        maps=f"{RESULTS}/truth/{{variant}}/maps.npz",
        explained=directory(f"{RESULTS}/truth/{{variant}}/explanations"),
        seconds=f"{RESULTS}/truth/{{variant}}/seconds.parquet",
    log:
        "logs/truth/explain_{variant}.log",
    benchmark:
        "logs/benchmarks/truth/explain_{variant}.tsv"
    params:
        base=lambda wc: truth_recipe(config),
        units=lambda wc: TRUTH["units"],
        sources=lambda wc: truth_sources(),
        settings=lambda wc: truth_settings(),
        random_seed=lambda wc: TRUTH["random_seed"],
        shuffle_seed=lambda wc: TRUTH["shuffle_seed"],
        reader=lambda wc: reader_kind(truth_dataset()),
        threads=config["threads"],
        code=code("truth_explain"),
    threads: config["threads"]
    resources:
        **rule_resources("truth_explain"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/truth_explain.py"


rule truth_grade:
    input:
        unpack(truth_data),
        planted_metrics=f"{RESULTS}/truth/planted/metrics.json",
        base_metrics=lambda wc: f"{RESULTS}/models/{TRUTH['base']}/metrics.json",
        maps=expand(f"{RESULTS}/truth/{{variant}}/maps.npz", variant=VARIANTS),
        explained=expand(f"{RESULTS}/truth/{{variant}}/explanations", variant=VARIANTS),
        seconds=expand(f"{RESULTS}/truth/{{variant}}/seconds.parquet", variant=VARIANTS),
    output:
        grades=f"{RESULTS}/truth/grades.parquet",
        planting=f"{RESULTS}/truth/planting.parquet",
        summary=f"{RESULTS}/truth/summary.parquet",
        metrics=f"{RESULTS}/truth/truth.json",
        table=report(f"{RESULTS}/truth/truth.html", caption="../report/truth.rst", category="Ground truth"),
        figure=report(f"{RESULTS}/truth/truth.png", caption="../report/truth.rst", category="Ground truth"),
    log:
        "logs/truth/grade.log",
    benchmark:
        "logs/benchmarks/truth/grade.tsv"
    params:
        units=lambda wc: TRUTH["units"],
        sources=lambda wc: truth_sources(),
        variants=VARIANTS,
        reader=lambda wc: reader_kind(truth_dataset()),
        pure=lambda wc: TRUTH["pure"],
        code=code("truth_grade"),
    threads: 1
    resources:
        **rule_resources("truth_grade"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/truth_grade.py"


rule truth_causal:
    input:
        unpack(truth_data),
        checkpoint=f"{RESULTS}/truth/planted/checkpoint.pt",
        splits=lambda wc: f"{RESULTS}/{truth_dataset()}/splits.parquet",
    output:
        table=f"{RESULTS}/truth/causal.parquet",
    log:
        "logs/truth/causal.log",
    benchmark:
        "logs/benchmarks/truth/causal.tsv"
    params:
        base=lambda wc: truth_recipe(config),
        units=lambda wc: TRUTH["units"],
        images=lambda wc: CAUSAL.get("images", 32),
        min_effect=lambda wc: CAUSAL.get("min_effect", 0.2),
        seed=lambda wc: CAUSAL.get("seed", 0),
        random_seed=lambda wc: TRUTH["random_seed"],
        reader=lambda wc: reader_kind(truth_dataset()),
        threads=config["threads"],
        code=code("truth_causal"),
    threads: config["threads"]
    resources:
        **rule_resources("truth_explain"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/truth_causal.py"


def truth_outputs(wildcards):
    if not TRUTH:
        raise WorkflowError("the config has no 'truth:' block; see config.yaml and docs/truth.md")
    causal = [rules.truth_causal.output.table] if DATASETS[truth_dataset()]["kind"] == "world" else []
    return list(rules.truth_grade.output) + causal


rule truth:
    input:
        truth_outputs,
    default_target: False
