# The run's plan, checked at DAG time, and what the rules look up in it (defaceaudit.workflow.jobs).
from defaceaudit import paths
from defaceaudit.cohort.demo.synth import synth_config
from defaceaudit.config import canonical, validate_config
from defaceaudit.errors import DefaceAuditError
from defaceaudit.paths import benchmark_file, log_file
from defaceaudit.workflow import reface_jobs
from defaceaudit.workflow.deface_plan import (
    freesurfer_license,
    license_bind,
    with_backend,
)
from defaceaudit.workflow.jobs import CONTAINER_WORK, RunJobs
from defaceaudit.workflow.plan import plan_run
from defaceaudit.workflow.resources import per_attempt

try:
    # Snakemake's validate() against the packaged schema, defaults filled; then the cohort and
    # every stage's plan, as `defaceaudit check-inputs` and `targets` build them
    validate_config(config)
    JOBS = RunJobs(plan_run(config), config)
except DefaceAuditError as err:
    # One line naming the file or subject, instead of a traceback.
    raise WorkflowError(str(err)) from None
