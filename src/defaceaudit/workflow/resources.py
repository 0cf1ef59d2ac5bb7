"""Resources the rules state once, for every executor (rules/*.smk; profiles/slurm adds only
site and GPU keys)."""

from __future__ import annotations

from collections.abc import Callable


def per_attempt(first: int) -> Callable[..., int]:
    """A resource of ``first`` at a job's first attempt and ``first * attempt`` after that
    (memory in MB, runtime in minutes): a job killed for exceeding its memory or time limit
    asks for more when Snakemake resubmits it (``retries`` in profiles/slurm). Locally, where
    nothing is retried, the value is ``first``."""

    def resource(wildcards, attempt: int) -> int:
        return first * attempt

    return resource
