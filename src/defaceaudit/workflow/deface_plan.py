"""Which defacer runs with which backend, checked against the config before any job runs."""

from __future__ import annotations

import shlex
from pathlib import Path

from defaceaudit.deface.run import CONTAINER_DEFACERS, NATIVE_DEFACERS
from defaceaudit.errors import InputError


def defacer_plan(deface: dict) -> dict[str, str]:
    """``{defacer: backend}`` from the config's ``deface`` section, in a stable order.

    Raises InputError (one line) for a backend a defacer does not have, a selected container
    defacer without an image (mri_reface: a local image you built, it cannot be redistributed),
    or mideface without a FreeSurfer licence file (:func:`freesurfer_license`).
    """
    from defaceaudit.deface.containers import check_image_reference

    plan = {}
    for defacer in deface["defacers"]:
        backend = deface["backends"][defacer]
        allowed = NATIVE_DEFACERS if backend == "native" else CONTAINER_DEFACERS
        if defacer not in allowed:
            raise InputError(f"config deface.backends: {defacer} has no {backend} backend")
        if backend == "container":
            image = deface["containers"].get(defacer)
            if not image:
                hint = (
                    " (build it from the Mayo tarball; see README)"
                    if defacer == "mri_reface"
                    else ""
                )
                raise InputError(
                    f"config deface.containers.{defacer}: no image given for the selected "
                    f"container defacer {defacer}{hint}"
                )
            try:
                check_image_reference(image)
            except ValueError as err:
                raise InputError(f"config deface.containers.{defacer}: {err}") from err
        plan[defacer] = backend
    if "mideface" in plan:
        freesurfer_license(deface)
    return plan


def freesurfer_license(deface: dict) -> str:
    """The absolute path of ``deface.freesurfer_license``; InputError (one line) when it is
    unset or not a file (mideface refuses to run without it, after its image has started)."""
    path = deface.get("freesurfer_license")
    if not path:
        raise InputError(
            "config deface.freesurfer_license: mideface needs a FreeSurfer licence file "
            "(license.txt, free from the FreeSurfer registration page); give its path"
        )
    if not Path(path).expanduser().is_file():
        raise InputError(f"config deface.freesurfer_license: {path} is not a file")
    return str(Path(path).expanduser().absolute())


def license_bind(args: str, license_file: str) -> str:
    """Apptainer arguments ``args`` with a read-only bind of the licence file at its own path
    (``--bind <file>:<file>:ro``), added once: Snakemake has no per-rule bind, and the
    arguments travel to cluster jobs, which plan the workflow again."""
    bind = f"--bind {shlex.quote(f'{license_file}:{license_file}:ro')}"
    return args if bind in args else f"{args} {bind}".strip()


def with_backend(plan: dict[str, str], backend: str) -> list[str]:
    return [d for d, b in plan.items() if b == backend]
