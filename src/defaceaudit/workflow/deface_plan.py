"""Which defacer runs with which backend, checked against the config before any job runs."""

from __future__ import annotations

from defaceaudit.deface.run import CONTAINER_DEFACERS, NATIVE_DEFACERS
from defaceaudit.errors import InputError


def defacer_plan(deface: dict) -> dict[str, str]:
    """``{defacer: backend}`` from the config's ``deface`` section, in a stable order.

    Raises InputError (one line) for a backend a defacer does not have, or a selected container
    defacer without an image (mri_reface: a local image you built, it cannot be redistributed).
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
    return plan


def with_backend(plan: dict[str, str], backend: str) -> list[str]:
    return [d for d, b in plan.items() if b == backend]
