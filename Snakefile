# nexplain: explain what the units of vision models do across their whole activation range.
# One .smk per stage; shared paths and input functions in rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/activations.smk"
include: "rules/explain.smk"
include: "rules/vlm.smk"
include: "rules/linear.smk"
include: "rules/pure.smk"
include: "rules/causal.smk"
include: "rules/specialization.smk"
include: "rules/report.smk"
include: "rules/truth.smk"
include: "rules/run.smk"


localrules:
    all,


rule all:
    input:
        all_outputs(),
    default_target: True
