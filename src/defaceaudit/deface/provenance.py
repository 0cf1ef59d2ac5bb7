"""Provenance of the deface stage: what made each defaced image, in its sidecar and in the
derivative folder's ``dataset_description.json`` (BIDS ``GeneratedBy``).

Each defacer's outputs form one BIDS-derivatives-style folder, ``results/deface/<defacer>/``
(``sub-*/anat/*_desc-<defacer>_T1w.nii.gz`` with sidecars); the originals are read from
``results/prepare/`` and never written (:func:`refuse_overwrite`).
"""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from defaceaudit import __version__
from defaceaudit.errors import DefaceAuditError

__all__ = [
    "BIDS_VERSION",
    "DESCRIPTIONS",
    "NATIVE_CALLS",
    "dataset_description",
    "describe_defaced_dataset",
    "image_digest",
    "refuse_overwrite",
    "sidecar",
    "tool_package",
]

BIDS_VERSION = "1.10.0"
DESCRIPTIONS = {
    "quickshear": "Quickshear 1.2.0 (PyPI package) with the prepared brain mask",
    "facemask": "pydeface 2.1.0's template and face mask, SimpleITK affine registration "
    "(not pydeface itself)",
    "avgface": "population-average face from the training split, affinely aligned, replaces "
    "the face (mri_reface's principle, not mri_reface)",
    "skullstrip": "brain mask applied: everything outside the brain set to 0",
    "niimath": "niimath -deface (PyPI package, BSD-2) with pydeface 2.1.0's template and face mask",
    "fsl_deface": "FSL fsl_deface (container)",
    "mri_deface": "FreeSurfer mri_deface 1.22 (container)",
    "pydeface": "pydeface 2.1.0 (container)",
    "mri_reface": "mri_reface (container, user-supplied image)",
    "mideface": "FreeSurfer mideface (container, 7.4.1 or later)",
    "afni_refacer2": "AFNI afni_refacer2 (container)",
}
#: what a native defacer calls (its sidecar's ``command`` when the tool has no command line)
NATIVE_CALLS = {
    "quickshear": "quickshear.quickshear(anat, brain_mask, buff=<buffer_voxels>)",
    "facemask": "defaceaudit.deface.facemask.deface_facemask(t1w, template, facemask)",
    "avgface": "defaceaudit.deface.avgface.reface_avgface(t1w, average, facemask)",
    "skullstrip": "defaceaudit.deface.simple.skull_strip(t1w, brain_mask)",
}
#: the PyPI distribution whose code defaces, per native defacer (the rest are defaceaudit's own)
_NATIVE_PACKAGES = {"quickshear": "quickshear", "niimath": "niimath"}
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


def tool_package(defacer: str, backend: str) -> dict | None:
    """``{"name", "version"}`` of the installed package that does a native defacer's work
    (defaceaudit itself for its own methods); None for a container tool (its image says it)."""
    if backend != "native":
        return None
    name = _NATIVE_PACKAGES.get(defacer, "defaceaudit")
    try:
        found = __version__ if name == "defaceaudit" else version(name)
    except PackageNotFoundError:
        found = None
    return {"name": name, "version": found}


def image_digest(image: str | None) -> str | None:
    """``sha256:<hex>`` of a digest-pinned ``docker://...@sha256:<hex>`` reference, else None
    (a local ``.sif`` file is identified by its path in the sidecar's ``image``)."""
    if not image:
        return None
    match = _DIGEST.search(image)
    return match[1] if match else None


def sidecar(
    defacer: str,
    backend: str,
    parameters: dict,
    *,
    image: str | None,
    command: str | None,
    seconds: float,
    source: str | os.PathLike,
) -> dict:
    """The JSON sidecar of one defaced image: tool, version, backend, package version (native)
    or image and digest (container), the command and parameters, the seconds it took (wall
    clock) and the image it started from."""
    package = tool_package(defacer, backend)
    if command is None and backend == "native":
        command = parameters.get("command") or NATIVE_CALLS.get(defacer)
    return {
        "tool": defacer,
        "Description": DESCRIPTIONS.get(defacer, defacer),
        "version": package["version"] if package else None,
        "backend": backend,
        "package": package,
        "image": image,
        "image_digest": image_digest(image),
        "command": command,
        "parameters": parameters,
        "seconds": round(seconds, 2),
        "source": str(source),
        "defaceaudit_version": __version__,
    }


def dataset_description(defacer: str, backend: str, image: str | None = None) -> dict:
    """BIDS ``dataset_description.json`` of ``results/deface/<defacer>/``: a derivative
    dataset ``GeneratedBy`` the tool (with its package version, or its container image) and
    defaceaudit, whose source is the prepared originals."""
    package = tool_package(defacer, backend)
    tool = {"Name": defacer, "Description": DESCRIPTIONS.get(defacer, defacer)}
    if package and package["name"] != "defaceaudit":
        tool["Version"] = package["version"]
    elif package:
        tool["Version"] = __version__
    if image:
        kind = "docker" if image.startswith("docker://") else "apptainer"
        tool["Container"] = {"Type": kind, "Tag": image}
    generated = [
        tool,
        {
            "Name": "defaceaudit",
            "Version": __version__,
            "Description": "ran the defacer on the prepared (RAS) originals, wrote the "
            "removed-region mask, sidecar and QC record",
        },
    ]
    return {
        "Name": f"{defacer}-defaced T1w images",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": generated,
        "SourceDatasets": [{"URL": "../../prepare", "Description": "the prepared originals"}],
    }


def refuse_overwrite(outputs: dict, sources: list[str | os.PathLike]) -> None:
    """DefaceAuditError when an output path is one of the ``sources`` (same file or same path):
    a defacer never writes over the image it started from."""
    resolved = {Path(s).resolve() for s in sources if s}
    for key, out in outputs.items():
        path = Path(out)
        same = path.resolve() in resolved or any(
            path.exists() and Path(s).exists() and path.samefile(s) for s in sources if s
        )
        if same:
            raise DefaceAuditError(
                f"output {key} {out} is an input image: originals are never overwritten"
            )


def describe_defaced_dataset(
    defacer: str, out: str | os.PathLike, backend: str, image: str | None = None
) -> None:
    """Write :func:`dataset_description` of ``defacer``'s derivative folder to ``out``."""
    from defaceaudit.tables import write_json

    write_json(dataset_description(defacer, backend, image), out)
