"""Subjects of a BIDS dataset: its T1w images (session, acq/rec/run choices), participants.tsv
and optional brain masks. Only the existence of files is checked (no image is opened)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from defaceaudit.cohort.subject import (
    LABEL_RULE,
    NIFTI_SUFFIXES,
    PARTICIPANTS_COLUMNS,
    RUN_RULES,
    SPLIT_RULE,
    SPLITS,
    Subject,
    absolute_path,
    input_error,
    is_label,
    parse_age,
    parse_sex,
    read_tsv_cells,
)

log = logging.getLogger(__name__)


def _nifti_glob(folder: Path, stem_pattern: str) -> list[Path]:
    """Files in ``folder`` matching ``stem_pattern`` + ``.nii`` or ``.nii.gz`` (sorted)."""
    if not folder.is_dir():
        return []
    found = {p for ext in NIFTI_SUFFIXES for p in folder.glob(stem_pattern + ext) if p.is_file()}
    return sorted(found)


def _session_dirs(subject_dir: Path, session: str | None) -> list[Path]:
    """``ses-*`` folders of a subject, or only ``ses-<session>`` when a session is given."""
    if session is not None:
        return [subject_dir / f"ses-{session}"]
    return sorted(p for p in subject_dir.glob("ses-*") if p.is_dir())


def _find_t1w(subject_dir: Path, label: str, session: str | None) -> list[Path]:
    """Candidate T1w files of one subject (no-session ``anat`` is skipped if a session is set)."""
    pattern = glob.escape(f"sub-{label}")
    found: list[Path] = []
    if session is None:
        found += _nifti_glob(subject_dir / "anat", f"{pattern}*_T1w")
    for ses_dir in _session_dirs(subject_dir, session):
        ses = glob.escape(ses_dir.name)
        found += _nifti_glob(ses_dir / "anat", f"{pattern}_{ses}*_T1w")
    return found


def _entity(path: Path, key: str) -> str | None:
    """Value of the BIDS entity ``key`` in a file name, or None (``run`` of
    ``sub-01_run-02_T1w.nii.gz`` is ``"02"``)."""
    for part in path.name.split("_")[:-1]:
        name, sep, value = part.partition("-")
        if sep and name == key:
            return value
    return None


def _run_number(path: Path) -> int | None:
    """The run index of a file name (``run-02`` -> 2), or None without a numeric run."""
    value = _entity(path, "run")
    return int(value) if value is not None and value.isdigit() else None


def _mask_folders(mask_root: Path, t1w: Path, subject_dir: Path) -> list[Path]:
    """Where a T1w's brain mask is looked for: the derivatives folder mirroring the T1w's own
    (``sub-X[/ses-Y]/anat``), then for a session's T1w the subject's ``sub-X/anat`` (the layout
    of fMRIPrep for subjects with several sessions, and of the README)."""
    relative_anat = t1w.parent.relative_to(subject_dir.parent)  # sub-X[/ses-Y]/anat
    folders = [mask_root / relative_anat]
    if len(relative_anat.parts) == 3:
        folders.append(mask_root / subject_dir.name / "anat")
    return folders


#: entities whose values must agree between a T1w and its brain mask when both name them
_MASK_ENTITIES = ("ses", "acq", "ce", "rec", "run", "echo", "part")


def _entities_conflict(mask: Path, t1w: Path) -> bool:
    """True when ``mask`` names another value of an entity the T1w names (runs by number:
    ``run-1`` and ``run-01`` agree)."""
    for key in _MASK_ENTITIES:
        a, b = _entity(mask, key), _entity(t1w, key)
        if a is None or b is None:
            continue
        if key == "run" and a.isdigit() and b.isdigit():
            a, b = int(a), int(b)
        if a != b:
            return True
    return False


def _find_mask(
    mask_root: Path, t1w: Path, subject_dir: Path, label: str, where: str
) -> Path | None:
    """A native-space ``desc-brain`` mask of ``t1w`` in a derivatives tree, or None.

    The first of :func:`_mask_folders` holding one wins. A mask may leave out an entity of the
    T1w's name (a subject-level mask of a session's T1w names no session) but never name
    another value (:data:`_MASK_ENTITIES`: ``run-1``'s mask is not ``run-2``'s); several masks
    there are narrowed to the one named like the T1w (``sub-X_run-1_desc-brain_mask`` for
    ``sub-X_run-1_T1w``), else InputError.
    """
    t1w_prefix = t1w.name.split("_T1w")[0] + "_"
    for folder in _mask_folders(mask_root, t1w, subject_dir):
        found = _nifti_glob(folder, glob.escape(f"sub-{label}") + "*_desc-brain_mask")
        native = [
            p
            for p in found
            if ("_space-" not in p.name or "_space-T1w_" in p.name)
            and not _entities_conflict(p, t1w)
        ]
        same_entities = [p for p in native if p.name.startswith(t1w_prefix)]
        if len(native) > 1 and len(same_entities) == 1:
            native = same_entities
        if len(native) > 1:
            files = ", ".join(str(p) for p in native)
            raise input_error(f"{where}: subject sub-{label} has several brain masks ({files})")
        if native:
            return native[0]
    return None


def _participants(root: Path) -> tuple[Path, dict[str, list[pd.Series]]]:
    """participants.tsv rows keyed by label without ``sub-`` (a list: duplicates are kept)."""
    path = root / "participants.tsv"
    frame = read_tsv_cells(path, f"participants.tsv {path}", PARTICIPANTS_COLUMNS)
    rows: dict[str, list[pd.Series]] = {}
    for _, row in frame.iterrows():
        rows.setdefault(row["participant_id"].removeprefix("sub-"), []).append(row)
    return path, rows


def _participant_row(rows: dict[str, list[pd.Series]], label: str, where: str) -> pd.Series:
    """The one participants.tsv row of a subject that has a T1w image."""
    found = rows.get(label, [])
    if not found:
        raise input_error(f"{where}: subject sub-{label} has a T1w image but no row")
    if len(found) > 1:
        lines = ", ".join(str(r["_line"]) for r in found)
        raise input_error(f"{where}: subject sub-{label} has {len(found)} rows (lines {lines})")
    return found[0]


def _check_role(role: str, where: str) -> None:
    if role not in SPLITS:
        raise input_error(f"{where}: unknown role {role!r} ({SPLIT_RULE})")


def _check_prefix(prefix: str, where: str) -> None:
    if prefix and not is_label(prefix):
        raise input_error(f"{where}: invalid subject_prefix {prefix!r} ({LABEL_RULE})")


def _subject_dirs(root: Path, where: str) -> list[Path]:
    dirs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not dirs:
        raise input_error(f"{where}: no subjects (no sub-<label> folders)")
    return dirs


def _mask_root(
    root: Path, brain_mask_dir: str | os.PathLike[str] | None, where: str
) -> Path | None:
    if brain_mask_dir is None:
        return None
    mask_root = absolute_path(brain_mask_dir, root)
    if not mask_root.is_dir():
        raise input_error(f"{where}: brain_mask_dir {mask_root} not found")
    return mask_root


def _run_choice(run: str | int | None, where: str) -> str | int | None:
    """``run`` as an index (``"run-02"``, ``"2"`` or ``2`` -> 2), ``lowest``, ``highest``, None."""
    if run is None or run in RUN_RULES:
        return run
    text = str(run).removeprefix("run-")
    if not text.isdigit():
        raise input_error(f"{where}: invalid run {run!r} (need a run number, lowest or highest)")
    return int(text)


def _gallery_choice(
    root: Path,
    session: str | None,
    run: str | int | None,
    path: str | os.PathLike[str] | None,
    where: str,
) -> dict | None:
    """Where the gallery images are (``root``, ``session``, ``run``), None when no gallery
    option is set."""
    if session is None and run is None and path is None:
        return None
    gallery_root = root if path is None else absolute_path(path, root)
    if not gallery_root.is_dir():
        raise input_error(f"{where}: gallery_path {gallery_root} not found")
    return {
        "root": gallery_root,
        "session": session.removeprefix("ses-") if session is not None else None,
        "run": _run_choice(run, where),
    }


#: the value of ``acq``/``rec`` that keeps the images without that entity in their name
NO_ENTITY = "none"


def _entity_matches(path: Path, key: str, wanted: str | None) -> bool:
    """True when ``wanted`` is unset, names ``path``'s ``key`` entity, or is :data:`NO_ENTITY`
    and the name has no such entity."""
    if wanted is None:
        return True
    value = _entity(path, key)
    return value is None if wanted == NO_ENTITY else value == wanted


def _narrow_t1w(
    candidates: list[Path], acq: str | None, rec: str | None, run: str | int | None
) -> list[Path]:
    """The candidates with ``acq-<acq>`` and ``rec-<rec>`` (when set; ``none``: without that
    entity), then the run ``run`` picks (when set): an index, or the lowest or highest run index
    (only when every candidate has one)."""
    chosen = [
        p for p in candidates if _entity_matches(p, "acq", acq) and _entity_matches(p, "rec", rec)
    ]
    if run is None or not chosen:
        return chosen
    numbers = [_run_number(p) for p in chosen]
    if run in RUN_RULES:
        if None in numbers:
            return chosen
        run = min(numbers) if run == "lowest" else max(numbers)
    return [p for p, n in zip(chosen, numbers, strict=True) if n == run]


def _bids_t1w(
    subject_dir: Path,
    label: str,
    session: str | None,
    acq: str | None,
    rec: str | None,
    run: str | int | None,
    where: str,
) -> Path:
    """The one T1w image of a subject; several are narrowed by ``acq``, ``rec`` and ``run``."""
    candidates = _find_t1w(subject_dir, label, session)
    if not candidates:
        if session is not None:
            scope = f" in session ses-{session}"
            need = f"ses-{session}/anat/sub-{label}_ses-{session}*_T1w.nii[.gz], as `session` asks"
        else:
            scope = ""
            need = f"anat/sub-{label}*_T1w.nii[.gz] or ses-*/anat/sub-{label}_ses-*_T1w.nii[.gz]"
        raise input_error(
            f"{where}: subject folder {subject_dir} has no T1w image{scope} (need {need}; "
            "or leave the subject out with `exclude_subjects`)"
        )
    if len(candidates) == 1:
        return candidates[0]
    chosen = _narrow_t1w(candidates, acq, rec, run)
    if len(chosen) == 1:
        return chosen[0]
    files = ", ".join(str(p) for p in candidates)
    keys = [
        "`acq`",
        "`rec` (none: the image without one)",
        "`run` (a run number, lowest or highest)",
    ]
    if len({_entity(p, "ses") for p in candidates}) > 1:
        keys.insert(0, "`session`")
    chosen_by = (("acq", acq), ("rec", rec), ("run", run))
    settings = [f"{k}={v!r}" for k, v in chosen_by if v is not None]
    verb = "leaves" if len(settings) == 1 else "leave"
    left = f"; {', '.join(settings)} {verb} {len(chosen)}" if settings else ""
    raise input_error(
        f"{where}: subject sub-{label} has {len(candidates)} T1w images ({files}){left}; "
        f"set this dataset's {', '.join(keys[:-1])} or {keys[-1]} to pick one, or leave the "
        "subject out with `exclude_subjects`"
    )


def _gallery_t1w(
    gallery_root: Path,
    label: str,
    t1w: Path,
    session: str | None,
    acq: str | None,
    rec: str | None,
    run: str | int | None,
    where: str,
) -> Path | None:
    """The subject's gallery image, an independent acquisition of it: its T1w in
    ``gallery_root`` (this dataset or a gallery dataset) chosen by ``session`` and ``run`` like
    the cohort's own (:func:`_bids_t1w`). None, with a warning, when the subject has none there
    (it is then left out of re-identification); InputError when it is the cohort's T1w itself
    or ambiguous."""
    subject_dir = gallery_root / f"sub-{label}"
    candidates = _find_t1w(subject_dir, label, session)
    chosen = candidates if len(candidates) < 2 else _narrow_t1w(candidates, acq, rec, run)
    if not chosen:
        scope = f" in session ses-{session}" if session is not None else ""
        runs = f" with run {run}" if run is not None else ""
        log.warning(
            "%s: subject sub-%s has no gallery image%s%s in %s; it is not re-identified",
            where,
            label,
            scope,
            runs,
            gallery_root,
        )
        return None
    if len(chosen) > 1:
        files = ", ".join(str(p) for p in chosen)
        raise input_error(
            f"{where}: subject sub-{label} has {len(chosen)} gallery images ({files}); set "
            "gallery_session or gallery_run to pick one"
        )
    if chosen[0] == t1w:
        raise input_error(
            f"{where}: subject sub-{label}'s gallery image is its own T1w ({t1w}); the gallery "
            "must be another acquisition: set gallery_session or gallery_run to another one"
        )
    return chosen[0]


def _excluded_labels(exclude_subjects: Iterable[str], labels: list[str], where: str) -> set[str]:
    """Labels (without ``sub-``) of ``exclude_subjects``; logs them, and warns about ids that
    name no subject folder."""
    excluded = {str(s).removeprefix("sub-") for s in exclude_subjects}
    unknown = sorted(excluded - set(labels))
    if unknown:
        names = ", ".join(f"sub-{s}" for s in unknown)
        log.warning("%s: exclude_subjects names %s, which has no subject folder", where, names)
    skipped = sorted(excluded & set(labels))
    if skipped:
        names = ", ".join(f"sub-{s}" for s in skipped)
        log.warning("%s: exclude_subjects leaves out %s", where, names)
    return excluded


def _provided_mask(
    mask_root: Path | None, t1w: Path, subject_dir: Path, label: str, where: str
) -> Path | None:
    """The subject's mask from ``brain_mask_dir`` (None without one: ROBEX computes one, and a
    warning names the subject and the folders searched when ``brain_mask_dir`` is set)."""
    if mask_root is None:
        return None
    mask = _find_mask(mask_root, t1w, subject_dir, label, where)
    if mask is None:
        folders = " or ".join(str(f) for f in _mask_folders(mask_root, t1w, subject_dir))
        log.warning(
            "%s: no brain mask for subject sub-%s in %s (need sub-%s*_desc-brain_mask.nii[.gz]); "
            "ROBEX computes one",
            where,
            label,
            folders,
            label,
        )
    return mask


def read_bids_dataset(
    path: str | os.PathLike[str],
    role: str,
    *,
    dataset: str | None = None,
    session: str | None = None,
    subject_prefix: str = "",
    brain_mask_dir: str | os.PathLike[str] | None = None,
    acq: str | None = None,
    rec: str | None = None,
    run: str | int | None = None,
    exclude_subjects: Iterable[str] = (),
    gallery_session: str | None = None,
    gallery_run: str | int | None = None,
    gallery_path: str | os.PathLike[str] | None = None,
) -> list[Subject]:
    """Subjects of a BIDS dataset, all in split ``role``, sorted by subject id.

    ``participants.tsv`` gives age (years) and sex. ``dataset`` defaults to the folder name;
    ``session`` (``"01"`` or ``"ses-01"``) restricts the T1w search to that session;
    ``subject_prefix`` is prepended to each label (``"ext"`` + ``01`` -> ``ext01``);
    ``brain_mask_dir`` is a derivatives folder (relative to ``path``) searched for
    ``*_desc-brain_mask.nii[.gz]`` (:func:`_find_mask`; a subject without one is logged as a
    warning and gets a ROBEX mask). A subject with several T1w images keeps those with
    ``acq-<acq>`` and ``rec-<rec>`` (``none``: those without the entity, such as the raw image
    beside a ``rec-norm`` one), then ``run-<run>`` or the ``lowest``/``highest`` run; one image
    must remain
    (InputError naming them otherwise); subjects with one T1w image are not affected.
    ``exclude_subjects``: participant ids (``"sub-03"`` or ``"03"``, before the prefix) left
    out, logged. Only file existence is checked; no image is opened.

    The re-identification gallery (each subject's ``gallery_t1w``, an independent acquisition
    of it) is on when ``gallery_session``, ``gallery_run`` or ``gallery_path`` is set: the T1w
    of session ``gallery_session`` (default ``session``) with run ``gallery_run`` (default
    ``run``) in the dataset at ``gallery_path`` (relative to ``path``; default this dataset),
    the same subject label (:func:`_gallery_t1w`).
    """
    root = absolute_path(path)
    where = f"BIDS dataset {root}"
    if not root.is_dir():
        raise input_error(f"{where}: folder not found")
    _check_role(role, where)
    _check_prefix(subject_prefix, where)
    session = session.removeprefix("ses-") if session is not None else None
    acq = acq.removeprefix("acq-") if acq is not None else None
    rec = rec.removeprefix("rec-") if rec is not None else None
    run = _run_choice(run, where)
    mask_root = _mask_root(root, brain_mask_dir, where)
    gallery = _gallery_choice(root, gallery_session, gallery_run, gallery_path, where)
    subject_dirs = _subject_dirs(root, where)
    labels = [d.name.removeprefix("sub-") for d in subject_dirs]
    excluded = _excluded_labels(exclude_subjects, labels, where)
    tsv_path, rows = _participants(root)
    tsv_where = f"participants.tsv {tsv_path}"
    name = dataset if dataset is not None else root.name
    subjects = []
    for subject_dir, label in zip(subject_dirs, labels, strict=True):
        if label in excluded:
            continue
        subject_id = subject_prefix + label
        if not is_label(subject_id):
            raise input_error(
                f"{where}: subject folder {subject_dir} gives invalid subject id "
                f"{subject_id!r} ({LABEL_RULE})"
            )
        t1w = _bids_t1w(subject_dir, label, session, acq, rec, run, where)
        row = _participant_row(rows, label, tsv_where)
        who = f"subject sub-{label}"
        subjects.append(
            Subject(
                subject=subject_id,
                t1w=t1w,
                split=role,
                age=parse_age(row["age"], tsv_where, who),
                sex=parse_sex(row["sex"], tsv_where, who),
                dataset=name,
                brain_mask=_provided_mask(mask_root, t1w, subject_dir, label, where),
                gallery_t1w=None
                if gallery is None
                else _gallery_t1w(
                    gallery["root"],
                    label,
                    t1w,
                    gallery["session"] or session,
                    acq,
                    rec,
                    gallery["run"] if gallery["run"] is not None else run,
                    where,
                ),
            )
        )
    return sorted(subjects, key=lambda s: s.subject)
