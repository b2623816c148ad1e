# Models: train the world model, then resolve every model (trained, checkpoint,
# torchvision, open_clip) into a manifest that later stages load from.


rule train_model:
    input:
        root=train_dataset_root,
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/checkpoint.pt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.json",
        snapshots=directory(f"{RESULTS}/models/{{model}}/snapshots"),  # train.snapshots (0: the random init)
    log:
        f"logs/train_model/{{model}}.log",
    benchmark:
        f"logs/benchmarks/train_model/{{model}}.tsv"
    params:
        arch=lambda wc: MODELS[wc.model]["arch"],
        input=lambda wc: MODELS[wc.model]["input"],
        train=lambda wc: MODELS[wc.model]["train"],
        reader=lambda wc: reader_kind(MODELS[wc.model]["train"]["dataset"]),
        threads=config["threads"],
        compute=compute("train_model"),
        code=code("train_model"),
    threads: config["threads"]
    resources:
        **rule_resources("train_model"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train_model.py"


rule model:
    input:
        unpack(model_weights),
    output:
        f"{RESULTS}/models/{{model}}/model.json",
    log:
        f"logs/model/{{model}}.log",
    benchmark:
        f"logs/benchmarks/model/{{model}}.tsv"
    params:
        spec=lambda wc: MODELS[wc.model],
        code=code("model"),
    threads: 1
    resources:
        **rule_resources("model"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/model.py"
