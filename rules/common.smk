# Helpers only: the cohort, and input/params functions that look subjects up in it.
from defaceaudit import paths
from defaceaudit.cohort import load_cohort
from defaceaudit.demo.synth import synth_config
from defaceaudit.errors import DefaceAuditError
from defaceaudit.inputs import cohort_frame
from defaceaudit.targets import all_targets, prepared_files

try:
    COHORT = load_cohort(config)
except DefaceAuditError as err:
    # One line naming the file or subject, instead of a traceback.
    raise WorkflowError(str(err)) from None


def log_file(rule_name, key="{subject}"):
    return f"{paths.RESULTS}/logs/{rule_name}/{key}.log"


def benchmark_file(rule_name, key="{subject}"):
    return f"{paths.RESULTS}/benchmarks/{rule_name}/{key}.tsv"


def prepare_inputs(wildcards):
    """The subject's T1w and, where the cohort provides one, its brain mask."""
    subject = COHORT.subjects[wildcards.subject]
    files = {"t1w": str(subject.t1w)}
    if subject.brain_mask is not None:
        files["brain_mask"] = str(subject.brain_mask)
    return files


def demo_base_inputs(wildcards):
    """The base head (and its brain mask) a demo subject is synthesised from."""
    base = COHORT.demo[wildcards.subject].base
    return {
        "t1w": paths.demo_base_file(base, "T1w"),
        "brain_mask": paths.demo_base_file(base, "brain_mask"),
    }


def demo_subject_params(wildcards):
    return COHORT.demo[wildcards.subject].as_params()


def demo_dataset_subjects(wildcards):
    return [p.as_params() for p in COHORT.demo.values() if p.dataset == wildcards.dataset]


def demo_dataset_root(wildcards):
    return paths.demo_table(wildcards.dataset, "")


def cohort_records(wildcards):
    return cohort_frame(COHORT.subjects.values()).to_dict(orient="records")
