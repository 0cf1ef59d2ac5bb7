# defaceaudit: audit MRI defacing. This file is an index: stages live in rules/*.smk and all
# logic in the installed package src/defaceaudit (see README.md).
from snakemake.utils import min_version

from defaceaudit.inputs import SUBJECT_PATTERN
from defaceaudit.demo.sources import BASE_HEADS
from defaceaudit.paths import DEMO_DATASETS, REFACE_MODELS
from defaceaudit.scheduler_patch import bound_scheduler_work
from defaceaudit.workflow import (
    cache_signatures,
    defer_full_collections,
    memoize_uri_parsing,
    resume_full_collections,
)

min_version("9.19")
# No full garbage collection while the DAG is built, none at exit (together a quarter of a
# paper-scale dry-run); onstart turns them on again for the run (see defaceaudit.workflow).
defer_full_collections()
# Each script and conda file path parsed once, not once per job (6 % of that dry-run).
memoize_uri_parsing()
# A real run's scheduling passes cost the same however many jobs are ready or done, and no
# more than one pending wake-up thread (Snakemake 9 itself: quadratic CPU, thousands of
# threads; see defaceaudit.scheduler_patch; DEFACEAUDIT_SCHEDULER_PATCH=0 turns it off).
bound_scheduler_work()


onstart:
    resume_full_collections()
    clear_partial()  # rules/common.smk


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
include: "rules/refacing.smk"
include: "rules/metrics.smk"
include: "rules/radiodensity.smk"
include: "rules/report.smk"


# The input and params functions above: parameters looked up once, not at every call.
cache_signatures(globals())


rule all:
    default_target: True
    input:
        RUN.targets(),
    localrule: True
