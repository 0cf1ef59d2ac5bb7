# defaceaudit: audit MRI defacing. This file is an index: stages live in rules/*.smk and all
# logic in the installed package src/defaceaudit (see README.md).
from snakemake.utils import min_version

from defaceaudit.cohort import SUBJECT_PATTERN
from defaceaudit.cohort.demo.sources import BASE_HEADS
from defaceaudit.paths import DEMO_DATASETS, REFACE_MODELS
from defaceaudit.workflow.snakemake_hooks import (
    cache_signatures,
    install_hooks,
    resume_full_collections,
)

min_version("9.19")
# Faster DAG building and scheduling in this Snakemake process (no full garbage collection while
# the DAG is built, workflow paths parsed once, a scheduler whose passes cost the same however
# many jobs are ready): defaceaudit.workflow.snakemake_hooks. DEFACEAUDIT_SNAKEMAKE_HOOKS=0 turns
# them all off.
install_hooks()


onstart:
    resume_full_collections()
    JOBS.clear_partial()  # defaceaudit.workflow.jobs


configfile: "config.yaml"


report: "rules/captions/workflow.rst"


wildcard_constraints:
    subject=SUBJECT_PATTERN,
    base="|".join(BASE_HEADS),
    dataset="|".join(DEMO_DATASETS),
    desc="[A-Za-z0-9]+",
    model="|".join(REFACE_MODELS),


include: "rules/common.smk"
include: "rules/cohort.smk"
include: "rules/prepare.smk"
include: "rules/deface.smk"
include: "rules/deface_containers.smk"
include: "rules/reface.smk"
include: "rules/metrics.smk"
include: "rules/face_recognition.smk"
include: "rules/radiodensity.smk"
include: "rules/report.smk"


# The input and params functions above: parameters looked up once, not at every call.
cache_signatures(globals())


rule all:
    default_target: True
    input:
        JOBS.run.targets(),
    localrule: True
