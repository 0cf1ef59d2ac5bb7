"""Re-identification as the field measures it: rendered faces matched by a face recognizer.

Schwarz et al. (2021, NeuroImage 231:117845) rendered MRI heads as face photographs and matched
them with a face recognition service: 97 % of participants were matched before defacing,
28-38 % after popular defacers. This is that attack, offline and end to end:

1. :func:`render_face_views` (per test subject): each image of the subject (its original, its
   gallery image, every defaced, population-average and DPM-refaced image) rendered as face
   photographs, frontal and a few oblique views and lights
   (:func:`defaceaudit.imaging.face_views.render_views`).
2. :func:`embed_face_views` (per test subject): in every rendering the face recognizer
   (:mod:`defaceaudit.metrics.recognizer`: dlib's detector, landmarks and ResNet embedding by
   default) finds the face, aligns and embeds it.
3. :func:`match_face_embeddings` (all test subjects): an image's embedding is the mean of its
   views' embeddings (the views where a face was found); each probe (an image of a test
   subject) is compared with every gallery image (the independent second acquisition) of its
   test set by Euclidean distance, and its rank is the position of its own subject (1 =
   nearest; ties broken at random, seeded). A probe with no face found in any view is NOT
   IDENTIFIED (no rank) and is counted (``n_no_face``), as a face recognition service that
   finds no face returns no match. Rank-k rates with bootstrap CIs and chance (k / N) as in
   :func:`defaceaudit.metrics.reidentify.summarise_ranks`, with ``matcher`` =
   ``face_recognition``.

Renderings of real heads are identifiable faces: they stay under ``results/``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from defaceaudit.imaging.face_views import DEFAULT_VIEWS, IMAGE_SIZE, View, render_views
from defaceaudit.imaging.nifti import load_t1w, to_ras
from defaceaudit.metrics.recognizer import RecognizerSettings, load_recognizer
from defaceaudit.metrics.reidentify import rank_of_own, summarise_ranks
from defaceaudit.tables import atomic_path, write_tsv

log = logging.getLogger(__name__)

MATCHER = "face_recognition"
#: the label of the gallery image among a subject's renderings; every other label is a probe
GALLERY = "gallery"
#: columns of the ranks table
RANK_COLUMNS = (
    "subject",
    "test_set",
    "image_type",
    "image",
    "n_views",
    "n_views_face",
    "no_face",
    "distance_own",
    "rank",
    "n_gallery",
    "nearest",
)


def image_label(image_type: str, image: str) -> str:
    """How renderings and embeddings name an image: ``original``, ``gallery``, or
    ``<image_type>__<image>`` (``defaced__quickshear``, ``dpm_refaced__dpm_quickshear``)."""
    return image_type if image_type == image else f"{image_type}__{image}"


def split_label(label: str) -> tuple[str, str]:
    """``(image_type, image)`` of a label of :func:`image_label`."""
    image_type, _, image = label.partition("__")
    return image_type, image or image_type


def _save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def render_face_views(
    images: Mapping[str, str | os.PathLike],
    out_renderings: str | os.PathLike,
    views: Sequence[View] = DEFAULT_VIEWS,
) -> None:
    """Render every image of one subject as face photographs.

    Args:
        images: label (:func:`image_label`) -> T1w NIfTI (any orientation; reoriented to RAS).
        out_renderings: npz with ``views`` (names ``[V]``), ``view_settings`` (JSON) and one
            uint8 array ``image__<label>`` ``[V, H, W]`` per image (all zero where the image
            has no head to render: no face will be found there).
        views: the cameras (:data:`~defaceaudit.imaging.face_views.DEFAULT_VIEWS`).
    """
    arrays: dict[str, np.ndarray] = {
        "views": np.asarray([v.name for v in views]),
        "view_settings": np.asarray(json.dumps([vars(v) for v in views])),
    }
    for label, path in images.items():
        img = to_ras(load_t1w(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        try:
            rendered = render_views(data, img.affine, views)
            stack = np.stack([rendered[v.name] for v in views])
        except ValueError as err:  # no head at all: nothing a camera could see
            log.warning("%s (%s): nothing rendered (%s)", label, path, err)
            stack = np.zeros((len(views), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        arrays[f"image__{label}"] = stack
        log.info("%s: %d views rendered", label, len(views))
    _save_npz(out_renderings, arrays)


def load_renderings(path: str | os.PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(view names, label -> uint8 [V, H, W])`` of a file of :func:`render_face_views`."""
    data = _load_npz(path)
    views = [str(v) for v in data["views"]]
    return views, {k[len("image__") :]: v for k, v in data.items() if k.startswith("image__")}


def embed_face_views(
    renderings: str | os.PathLike,
    out_embeddings: str | os.PathLike,
    recognizer: RecognizerSettings | Mapping,
) -> dict[str, int]:
    """Find, align and embed the face in every rendering of one subject.

    Writes ``out_embeddings`` (npz): ``views``, ``recognizer`` (JSON of its settings) and per
    image label ``found__<label>`` bool ``[V]``, ``score__<label>`` ``[V]`` (detector score,
    NaN without a face), ``box__<label>`` int ``[V, 4]`` (left, top, right, bottom; -1 without a
    face) and ``embedding__<label>`` float32 ``[V, D]`` (NaN rows without a face). Returns
    ``label -> views with a face``.
    """
    model = load_recognizer(recognizer)
    views, images = load_renderings(renderings)
    arrays: dict[str, np.ndarray] = {
        "views": np.asarray(views),
        "recognizer": np.asarray(json.dumps(model.settings.as_params())),
    }
    found_views = {}
    dim = None
    faces_by_label = {label: model.find_all(list(stack)) for label, stack in images.items()}
    for faces in faces_by_label.values():
        for face in faces:
            if face is not None:
                dim = len(face.embedding)
                break
    dim = dim or 1
    for label, faces in faces_by_label.items():
        found = np.array([f is not None for f in faces])
        arrays[f"found__{label}"] = found
        arrays[f"score__{label}"] = np.array([np.nan if f is None else f.score for f in faces])
        arrays[f"box__{label}"] = np.array(
            [(-1, -1, -1, -1) if f is None else f.box for f in faces], dtype=np.int32
        ).reshape(len(faces), 4)
        embedding = np.full((len(faces), dim), np.nan, dtype=np.float32)
        for i, face in enumerate(faces):
            if face is not None:
                embedding[i] = face.embedding
        arrays[f"embedding__{label}"] = embedding
        found_views[label] = int(found.sum())
        log.info("%s: a face in %d of %d views", label, found.sum(), len(faces))
    _save_npz(out_embeddings, arrays)
    return found_views


def load_embeddings(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """``label -> {"found", "score", "box", "embedding"}`` of a file of :func:`embed_face_views`."""
    data = _load_npz(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        kind, sep, label = key.partition("__")
        if sep:
            out.setdefault(label, {})[kind] = value
    return out


def image_embedding(entry: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """One image's embedding ``[D]``: the mean over the views where a face was found (None:
    no face in any view). Averaging the views' embeddings is the usual template of a face
    recognition system enrolled with several photographs of one person."""
    found = np.asarray(entry["found"], dtype=bool)
    if not found.any():
        return None
    return np.asarray(entry["embedding"], dtype=np.float64)[found].mean(axis=0)


def rank_face_probes(
    galleries: Mapping[str, Mapping[str, np.ndarray | None]],
    probes: Sequence[Mapping],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank of each probe's own subject among its test set's gallery, by embedding distance.

    Args:
        galleries: ``test set -> {subject -> gallery embedding [D] or None (no face found in
            the gallery image: never the nearest)}``.
        probes: mappings with ``subject``, ``test_set``, ``image_type``, ``image``,
            ``embedding`` (``[D]`` or None: no face found) and ``n_views``, ``n_views_face``.
        seed: the tie-breaks' seed (probe ``i`` draws with ``[seed, i]``).
    Returns one row per probe (:data:`RANK_COLUMNS`): ``rank`` NaN and ``no_face`` True where
    the probe has no face (not identified); ``distance_own`` NaN where it or its own gallery
    image has none.
    """
    rows = []
    for i, probe in enumerate(probes):
        gallery = galleries.get(probe["test_set"], {})
        if probe["subject"] not in gallery:
            raise ValueError(
                f"probe subject {probe['subject']} has no image in the {probe['test_set']} gallery"
            )
        subjects = list(gallery)
        own = subjects.index(probe["subject"])
        embedding = probe["embedding"]
        row = {k: probe[k] for k in ("subject", "test_set", "image_type", "image")}
        row.update(
            n_views=int(probe["n_views"]),
            n_views_face=int(probe["n_views_face"]),
            no_face=embedding is None,
            n_gallery=len(subjects),
            distance_own=np.nan,
            rank=np.nan,
            nearest="",
        )
        if embedding is not None:
            distances = np.array(
                [
                    np.inf
                    if gallery[s] is None
                    else float(np.linalg.norm(np.asarray(embedding) - gallery[s]))
                    for s in subjects
                ]
            )
            rng = np.random.default_rng([seed, i])
            row.update(
                distance_own=distances[own] if np.isfinite(distances[own]) else np.nan,
                rank=rank_of_own(distances, own, rng),
                nearest=subjects[int(np.argmin(distances))] if np.isfinite(distances).any() else "",
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RANK_COLUMNS))


def _probe_entries(subject: str, test_set: str, path: str | os.PathLike) -> list[dict]:
    entries = []
    for label, entry in load_embeddings(path).items():
        if label == GALLERY:
            continue
        image_type, image = split_label(label)
        entries.append(
            {
                "subject": subject,
                "test_set": test_set,
                "image_type": image_type,
                "image": image,
                "embedding": image_embedding(entry),
                "n_views": len(entry["found"]),
                "n_views_face": int(np.asarray(entry["found"]).sum()),
            }
        )
    return entries


def _markdown(summary: pd.DataFrame, ranks: pd.DataFrame, notes: Sequence[str]) -> str:
    from defaceaudit.metrics.reidentify import rank_table

    title = (
        "Re-identification by face recognition: each image's head rendered as face "
        "photographs (frontal and oblique views and lights), faces detected, aligned and "
        "embedded by the recognizer, and each test subject's images ranked against the "
        "renderings of the gallery (an independent acquisition of each subject) of its test "
        "set by embedding distance."
    )
    if summary.empty:
        return f"{title}\n\nNot computed.\n\n" + "".join(f"- {n}\n" for n in notes)
    table = rank_table(summary, [1], median_rank=False)
    views = ranks.groupby("image_type")[["n_views_face", "n_views"]].sum()
    detection = "; ".join(
        f"{t}: {int(r.n_views_face)} of {int(r.n_views)}" for t, r in views.iterrows()
    )
    return (
        f"{title}\n\n"
        + table.to_markdown(index=False)
        + "\n\nA probe with no face found in any view is not identified (it counts as a miss "
        "in the rate, and under No face). Rates are means over probes with percentile "
        "bootstrap 95% CIs; chance is 1 / N for a gallery of N images.\n"
        + f"\n- Views with a face found, per image type: {detection}."
        + "".join(f"\n- {n}" for n in notes)
        + "\n"
    )


def match_face_embeddings(
    embeddings: Mapping[str, Mapping[str, str | os.PathLike]],
    out: Mapping[str, str | os.PathLike],
    *,
    recognizer: str = "",
    notes: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Face-recognition re-identification over files.

    Args:
        embeddings: ``test set -> {subject -> npz of embed_face_views}``; each file holds the
            subject's gallery image (label ``gallery``) and its probes.
        out: paths ``ranks`` (TSV, one row per probe), ``summary`` (TSV, the rows of
            ``reidentification.tsv`` with ``matcher`` = ``face_recognition``) and ``markdown``.
        recognizer: the recognizer's name for the notes.
        notes: lines under the Markdown table.
    Returns the summary.
    """
    galleries: dict[str, dict[str, np.ndarray | None]] = {}
    probes: list[dict] = []
    notes = list(notes)
    if recognizer:
        notes.insert(0, f"Recognizer: {recognizer}.")
    for test_set, files in embeddings.items():
        galleries[test_set] = {}
        for subject, path in files.items():
            entries = load_embeddings(path)
            if GALLERY not in entries:
                raise ValueError(
                    f"{path} holds no gallery rendering (labels: {', '.join(entries)})"
                )
            galleries[test_set][subject] = image_embedding(entries[GALLERY])
            probes += _probe_entries(subject, test_set, path)
        missing = [s for s, e in galleries[test_set].items() if e is None]
        if missing:
            notes.append(
                f"{test_set}: no face found in the gallery rendering of {', '.join(missing)} "
                "(never matched)"
            )
    ranks = rank_face_probes(galleries, probes, seed=seed)
    summary = summarise_ranks(ranks, n_resamples=n_resamples, seed=seed)
    summary.insert(0, "matcher", MATCHER)
    order = {t: i for i, t in enumerate(("original", "defaced", "population_average"))}
    ranks = ranks.sort_values(
        ["test_set", "image_type", "image", "subject"],
        key=lambda c: c.map(lambda t: order.get(t, len(order))) if c.name == "image_type" else c,
        kind="stable",
    )
    write_tsv(ranks, out["ranks"])
    write_tsv(summary, out["summary"])
    with atomic_path(out["markdown"]) as tmp:
        tmp.write_text(_markdown(summary, ranks, notes))
    return summary
