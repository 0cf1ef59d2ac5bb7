"""The deface jobs of a run, the files each one reads, and the logs that explain a missing
output, as plain functions (tested without Snakemake; rules/common.smk calls them).

``defacers`` below is the run's ``{defacer: backend}`` plan
(:func:`defaceaudit.workflow.deface_plan.defacer_plan`), ``backend`` "native" or "container".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from defaceaudit import paths
from defaceaudit.deface.run import WRITES_REMOVED_MASK

if TYPE_CHECKING:
    from defaceaudit.cohort.load import Cohort

#: the logs of the jobs that make a native defacer's extra inputs (:func:`native_inputs`)
PRODUCER_LOGS = {
    paths.FACE_TEMPLATE["facemask"]: paths.log_file("fetch_face_template", "pydeface"),
    paths.AVERAGE_HEAD: paths.log_file("build_average_head", "train"),
}


def prepared_inputs(subject: str) -> dict[str, str]:
    """The prepared T1w, head mask and brain mask of ``subject`` (what every deface job reads)."""
    files = paths.prepared_files(subject)
    return {k: files[k] for k in ("t1w", "head_mask", "brain_mask")}


def native_inputs(defacer: str, subject: str) -> dict[str, str]:
    """Every file a native deface job reads: the prepared images, plus the face template
    (facemask, niimath) or the average head and its face mask (avgface)."""
    files = prepared_inputs(subject)
    if defacer in ("facemask", "niimath"):
        files.update(paths.FACE_TEMPLATE)
    elif defacer == "avgface":
        files["average"] = paths.AVERAGE_HEAD
        files["facemask"] = paths.FACE_TEMPLATE["facemask"]
    return files


def native_params(defacer: str, deface: dict) -> dict:
    """The native defacer's own settings from the config's ``deface`` section."""
    if defacer == "quickshear":
        return {"buffer": deface["quickshear_buffer"]}
    return {}


def container_params(defacer: str, deface: dict) -> dict:
    """The container tool's settings, as recorded in the defaced image's sidecar (only the
    ``deface`` keys of ``defacer`` are read)."""
    if defacer == "quickshear":
        return {"buffer_voxels": deface["quickshear_buffer"]}
    if defacer == "pydeface":
        return {"cost": deface["pydeface_cost"], "nocleanup": True}
    if defacer == "mri_deface":
        return {"atlas_dir": deface["mri_deface_atlas_dir"]}
    if defacer == "mri_reface":
        return {"imType": "T1"}
    if defacer == "mideface":
        return {
            "ears": deface["mideface_ears"],
            "samseg": deface["mideface_samseg"],
            "fill_zero": False,
            "freesurfer_license": "bound read-only (deface.freesurfer_license)",
        }
    if defacer == "afni_refacer2":
        return {"mode": deface["afni_refacer2_mode"], "shell": deface["afni_refacer2_shell"]}
    if defacer == "fsl_deface":
        return {}
    raise KeyError(f"no container defacer {defacer!r}")


def container_finalize_inputs(defacer: str, subject: str) -> dict[str, str]:
    """Every file finalize_container_deface reads: the prepared images, the tool's raw output
    (and its mask, for the tools that write one), the command it ran and the tool job's
    benchmark (seconds)."""
    files = prepared_inputs(subject)
    raw = paths.container_raw(defacer, subject)
    files["raw"] = raw["t1w"]
    files["command"] = raw["command"]
    if defacer in WRITES_REMOVED_MASK:
        files["raw_removed"] = raw["removed"]
    files["benchmark"] = paths.benchmark_file(f"deface_container_{defacer}", subject)
    return files


def upstream_logs(defacers: dict[str, str], defacer: str, subject: str) -> list[str]:
    """Logs of the jobs a deface job waits for: its subject's preparation and, natively, the
    jobs making its other inputs (the face template, the average head)."""
    logs = [paths.log_file("prepare_subject", subject)]
    if defacers[defacer] == "native":
        inputs = set(native_inputs(defacer, subject).values())
        logs += [log for path, log in PRODUCER_LOGS.items() if path in inputs]
    return logs


def deface_jobs(cohort: Cohort, defacers: dict[str, str]) -> list[tuple[str, str]]:
    """``(defacer, subject)`` of every deface job, subject by subject in cohort order."""
    return [(d, s) for s in cohort.subjects for d in defacers]


def qc_records(cohort: Cohort, defacers: dict[str, str]) -> list[str]:
    """The QC json of every deface job (write_qc_table's input)."""
    return [paths.defaced_files(d, s)["qc"] for d, s in deface_jobs(cohort, defacers)]


def expected_qc_records(cohort: Cohort, defacers: dict[str, str]) -> list[dict]:
    """Every QC record a complete run has (defacer, subject, backend, qc path), with the logs
    that explain a missing one: ``logs``, the job's own (the container tool's first), and
    ``upstream_logs``, of the jobs it waits for (a failed one means it never ran)."""
    rows = []
    for defacer, subject in deface_jobs(cohort, defacers):
        backend = defacers[defacer]
        key = f"{defacer}_{subject}_{paths.desc_label(defacer)}"
        if backend == "native":
            logs = [paths.log_file("deface_native", key)]
        else:
            logs = [
                paths.log_file(f"deface_container_{defacer}", subject),
                paths.log_file("finalize_container_deface", key),
            ]
        rows.append(
            {
                "defacer": defacer,
                "subject": subject,
                "backend": backend,
                "qc": paths.defaced_files(defacer, subject)["qc"],
                "logs": logs,
                "upstream_logs": upstream_logs(defacers, defacer, subject),
            }
        )
    return rows
