"""Read and check the cohort: BIDS datasets and TSV manifests, validated at DAG time.

Nothing here opens an image: only the existence of files is checked, so that building the
Snakemake DAG stays fast. Every error is an :class:`~defaceaudit.errors.InputError` whose message
is one line naming the file (full path) or subject and the problem.

Ages are in years; sex is ``"M"`` or ``"F"``; subject ids are BIDS labels without ``sub-``.
"""

from defaceaudit.cohort.bids import read_bids_dataset
from defaceaudit.cohort.cohort_table import check_cohort, cohort_frame, write_cohort_table
from defaceaudit.cohort.manifest import read_manifest
from defaceaudit.cohort.subject import SPLITS, SUBJECT_PATTERN, Subject

__all__ = [
    "SPLITS",
    "SUBJECT_PATTERN",
    "Subject",
    "check_cohort",
    "cohort_frame",
    "read_bids_dataset",
    "read_manifest",
    "write_cohort_table",
]
