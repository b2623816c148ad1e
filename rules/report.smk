# The score report: every method of a layer on the same units, from the method tables,
# and its static HTML pages (a sortable index of every unit and one page per unit; the units of
# `report.units` also get figures).


rule score_report:
    input:
        unpack(report_inputs),
    output:
        table=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/scores.parquet",
        metrics=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/scores.json",
        units=f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/units.parquet",
        methods=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/methods.png",
                       caption="../report/methods.rst", category="Report", subcategory="{model} {layer}"),
        scatter=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/corr_vs_ablation.png",
                       caption="../report/corr_vs_ablation.rst", category="Report", subcategory="{model} {layer}"),
        top_impact=report(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/top_impact_curve.png",
                          caption="../report/top_impact.rst", category="Report", subcategory="{model} {layer}"),
        unit_figures=report(directory(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/units"),
                            patterns=["{name}.png"], caption="../report/unit_figures.rst", category="Report",
                            subcategory="{model} {layer} units"),
    log:
        f"logs/score_report/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/score_report/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        formulas=lambda wc: report_names(wc)["formulas"],
        linear=lambda wc: report_names(wc)["linear"],
        sources=report_sources,
        simulators=LINEAR.get("simulate", {}).get("simulators"),
        units=(config.get("report") or {}).get("units", "0-3"),
        reader=lambda wc: reader_kind(wc.dataset),
        code=code("score_report"),
    threads: 1
    resources:
        **rule_resources("score_report"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/score_report.py"


rule unit_pages:
    input:
        unpack(unit_page_inputs),
    output:
        pages=report(directory(f"{RESULTS}/{{model}}/{{dataset}}/{{layer}}/report/pages"), patterns=page_patterns(),
                     caption="../report/unit_pages.rst", category="Report", subcategory="{model} {layer} unit pages"),
    log:
        f"logs/unit_pages/{{model}}/{{dataset}}/{{layer}}.log",
    benchmark:
        f"logs/benchmarks/unit_pages/{{model}}/{{dataset}}/{{layer}}.tsv"
    params:
        formulas=lambda wc: report_names(wc)["formulas"],
        linear=lambda wc: report_names(wc)["linear"],
        simulator=LINEAR.get("simulate", {}).get("simulators", [None])[0],
        units=(config.get("report") or {}).get("units", "0-3"),
        reader=lambda wc: reader_kind(wc.dataset),
        quantile=EXPLAIN.get("quantile", 0.995),  # the top region NetDissect and CoEx explain
        code=code("unit_pages"),
    threads: 1
    resources:
        **rule_resources("unit_pages"),
    conda:
        "../envs/torch.yaml"  # the top images upsample maps with torch
    script:
        "../scripts/unit_pages.py"


rule headlines:
    input:
        headline_inputs,
    output:
        f"{RESULTS}/headlines.json",
    log:
        "logs/headlines.log",
    benchmark:
        "logs/benchmarks/headlines.tsv"
    params:
        config=headline_config(),
        code=code("headlines"),
    threads: 1
    resources:
        **rule_resources("headlines"),
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/headlines.py"
