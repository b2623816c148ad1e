# Vision-language models (docs/methods.md): the world's own, trained here on captions of
# its images with open_clip, or any open_clip checkpoint. They give the VLM concept matrices
# (LE(VLM), the simulator) and the image embeddings PURE compares against.


rule captions:
    input:
        concepts=f"{RESULTS}/{{dataset}}/concepts",
        root=dataset_root,
    output:
        f"{RESULTS}/{{dataset}}/captions.parquet",
    log:
        f"logs/captions/{{dataset}}.log",
    benchmark:
        f"logs/benchmarks/captions/{{dataset}}.tsv"
    params:
        captions=config.get("captions"),
        code=code("captions"),
    threads: 1
    resources:
        **rule_resources("captions"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/captions.py"


rule train_vlm:
    input:
        root=vlm_train_root,
        captions=lambda wc: f"{RESULTS}/{VLMS[wc.vlm]['train']['dataset']}/captions.parquet",
        splits=lambda wc: f"{RESULTS}/{VLMS[wc.vlm]['train']['dataset']}/splits.parquet",
    output:
        checkpoint=f"{RESULTS}/vlms/{{vlm}}/open_clip_model.safetensors",
        history=f"{RESULTS}/vlms/{{vlm}}/train.json",
    log:
        f"logs/train_vlm/{{vlm}}.log",
    benchmark:
        f"logs/benchmarks/train_vlm/{{vlm}}.tsv"
    params:
        arch=lambda wc: VLMS[wc.vlm]["arch"],
        train=lambda wc: VLMS[wc.vlm]["train"],
        reader=lambda wc: reader_kind(VLMS[wc.vlm]["train"]["dataset"]),
        threads=config["threads"],
        compute=compute("train_vlm"),
        code=code("train_vlm"),
    threads: config["threads"]
    resources:
        **rule_resources("train_vlm"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train_vlm.py"


rule vlm_embeddings:
    input:
        unpack(vlm_weights),
        root=dataset_root,
    output:
        f"{RESULTS}/{{dataset}}/vlm/{{vlm}}/image_embeddings.parquet",
    log:
        f"logs/vlm_embeddings/{{dataset}}/{{vlm}}.log",
    benchmark:
        f"logs/benchmarks/vlm_embeddings/{{dataset}}/{{vlm}}.tsv"
    params:
        spec=lambda wc: vlm_spec(wc.vlm),
        reader=lambda wc: reader_kind(wc.dataset),
        compute=compute("vlm_embeddings"),
        threads=config["threads"],
        code=code("vlm_embeddings"),
    threads: config["threads"]
    resources:
        **rule_resources("vlm_embeddings"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/vlm_embeddings.py"


rule evaluate_vlm:
    input:
        unpack(vlm_weights),
        embeddings=lambda wc: f"{RESULTS}/{VLMS[wc.vlm]['train']['dataset']}/vlm/{wc.vlm}/image_embeddings.parquet",
        concepts=lambda wc: f"{RESULTS}/{VLMS[wc.vlm]['train']['dataset']}/concepts",
        splits=lambda wc: f"{RESULTS}/{VLMS[wc.vlm]['train']['dataset']}/splits.parquet",
    output:
        calibration=f"{RESULTS}/vlms/{{vlm}}/calibration.json",
        table=f"{RESULTS}/vlms/{{vlm}}/zero_shot.parquet",
        metrics=f"{RESULTS}/vlms/{{vlm}}/zero_shot.json",
    log:
        f"logs/evaluate_vlm/{{vlm}}.log",
    benchmark:
        f"logs/benchmarks/evaluate_vlm/{{vlm}}.tsv"
    params:
        spec=lambda wc: vlm_spec(wc.vlm),
        template=lambda wc: VLMS[wc.vlm].get("template", "{}"),
        code=code("evaluate_vlm"),
    threads: 1
    resources:
        **rule_resources("evaluate_vlm"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/evaluate_vlm.py"


rule vlm_matrix:
    input:
        unpack(vlm_weights),
        unpack(vlm_calibration),
        embeddings=f"{RESULTS}/{{dataset}}/vlm/{{vlm}}/image_embeddings.parquet",
        labels=f"{RESULTS}/{{dataset}}/concept_matrix/label.parquet",
        splits=f"{RESULTS}/{{dataset}}/splits.parquet",
        concept_set=lambda wc: local(DATASETS[wc.dataset]["concept_set"]),  # in the repo, never in remote storage
    output:
        f"{RESULTS}/{{dataset}}/concept_matrix/{{vlm}}.parquet",
    log:
        f"logs/vlm_matrix/{{dataset}}/{{vlm}}.log",
    benchmark:
        f"logs/benchmarks/vlm_matrix/{{dataset}}/{{vlm}}.tsv"
    params:
        spec=lambda wc: vlm_spec(wc.vlm),
        template=lambda wc: VLMS[wc.vlm].get("template", "{}"),
        code=code("vlm_matrix"),
    threads: 1
    resources:
        **rule_resources("vlm_matrix"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/vlm_matrix.py"
