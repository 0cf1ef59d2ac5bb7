"""Re-identification from faces (beyond the paper): can an image's face pick out its subject?

The attacker holds a GALLERY: an independent acquisition of each test subject with its face
(on the demo a second synthetic session, on a user's cohort a second BIDS session or run, or a
gallery dataset), registered rigidly to the template on its own
(:func:`~defaceaudit.metrics.template_space.align_gallery_face`). Each PROBE, an image of one
test subject (its original: the ceiling; its defaced, population-average or refaced images),
is cropped and registered to the template on its own too, never through the subject's original
(:mod:`defaceaudit.metrics.face_rows`).

Only the face counts: gallery and probe vertices are kept inside the FACE REGION, the union of
what the configured defacers removed, in template space, dilated by a few mm
(:func:`~defaceaudit.metrics.template_space.build_face_region`). The forehead, scalp and ears,
which defacing leaves bit-identical, are never compared, so a defaced image cannot be matched
through them.

Each probe is compared with every gallery face of its test set by MASD in template space
(probe vertices -> nearest gallery vertex, as ``masd_mm``); the gallery is ranked by that
distance and the probe's rank is the position of its own subject (1 = nearest). Ties are broken
at random (seeded): a probe with no face left in the region is equally far from everyone and
ranks uniformly at random, which is chance, as an attacker with nothing to go on would guess.
The rank-k identification rate is the fraction of probes whose subject ranks k or better;
chance is k / N for a gallery of N faces, and a rate is reported only for k < N / 2 (rank-5 in a
gallery of 4 would be 1 whatever the images).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from defaceaudit.metrics.face_tables import format_ci
from defaceaudit.metrics.template_space import FaceRegion, load_faces
from defaceaudit.stats.bootstrap import bootstrap_mean_ci
from defaceaudit.tables import atomic_path, read_tsv, write_tsv

RANKS = (1, 5)
#: image types in the order of the tables: the ceiling first
PROBE_TYPES = ("original", "defaced", "population_average", "dpm_refaced")
#: Probe vertices compared with each gallery face (a seeded random subset; 0 = all). The cost is
#: probes x gallery faces x vertices nearest-neighbour queries: at paper scale (7,000 probes,
#: nearly all against the 469 faces of the external test set, about 100,000 vertices per 1 mm
#: face) all vertices would take about two
#: CPU-days; 2,000 take about an hour, and the mean over 2,000 vertices estimates the MASD with a
#: standard error of 2 % of the distances' spread.
PROBE_VERTICES = 2000
SUMMARY_KEYS = ("test_set", "image_type", "image")
#: columns of the ranks table (labels first)
RANK_COLUMNS = (
    "subject",
    *SUMMARY_KEYS,
    "n_vertices",
    "distance_own_mm",
    "rank",
    "n_gallery",
    "nearest",
)


def probe_subset(vertices: np.ndarray, n: int, seed: int | Sequence[int]) -> np.ndarray:
    """``n`` of a probe's ``vertices`` ``[M, 3]``, drawn without replacement by a generator
    seeded with ``seed`` (all of them when ``n`` is 0 or at least M)."""
    if n <= 0 or len(vertices) <= n:
        return vertices
    return vertices[np.random.default_rng(seed).choice(len(vertices), n, replace=False)]


def in_region(vertices: np.ndarray, region: FaceRegion | None) -> np.ndarray:
    """The vertices ``[N, 3]`` (template world, mm) inside ``region`` (all without one)."""
    vertices = np.asarray(vertices, dtype=float).reshape(-1, 3)
    return vertices if region is None else vertices[region.contains(vertices)]


def rank_of_own(distances: np.ndarray, own: int, rng: np.random.Generator) -> int:
    """Rank (1 = nearest) of entry ``own`` among ``distances`` ``[N]``, ties broken uniformly
    at random; NaN distances (no face to compare) tie with each other."""
    d = np.where(np.isnan(distances), np.inf, distances)
    closer = int(np.sum(d < d[own]))
    tied_others = int(np.sum(d == d[own])) - 1
    return 1 + closer + int(rng.integers(0, tied_others + 1))


def probe_layer(probe: dict) -> str:
    """The layer of the face region a probe is compared in: its defacer's (a defaced image,
    or one refaced from it, ``dpm_<defacer>``; a population-average refacer's own), where
    the region has one; the whole region for an original (the ceiling)."""
    image = str(probe.get("image", ""))
    return image.removeprefix("dpm_")


def rank_probes(
    galleries: dict[str, dict[str, np.ndarray]],
    probes: list[dict],
    *,
    region: FaceRegion | None = None,
    probe_vertices: int = PROBE_VERTICES,
    seed: int = 0,
    workers: int = -1,
) -> pd.DataFrame:
    """Rank of each probe's own subject among its test set's gallery.

    Args:
        galleries: ``test set -> {subject -> gallery face vertices [N, 3]}`` (template world,
            mm).
        probes: dicts with ``subject``, ``test_set``, ``vertices`` ``[M, 3]`` (M may be 0: no
            face left) and labels (``image_type``, ``image``, ...) copied to the output.
        region: only vertices inside it are compared (None: all); a probe only inside its
            layer (:func:`probe_layer`, :meth:`FaceRegion.layer`).
        probe_vertices: vertices of each probe compared with every gallery face
            (:func:`probe_subset`, the same subset for all of them; 0 = all).
        seed: the subsets' and the tie-breaks' seed (probe ``i`` draws with ``[seed, i]``).
        workers: threads of each nearest-neighbour query (-1 = every CPU).
    Returns one row per probe: the labels, ``n_vertices`` (in the region), ``distance_own_mm``
    (MASD to its own gallery face, over the subset; NaN without a face), ``rank`` (1 = its own
    gallery face is the nearest; ties broken at random, so a probe with no face ranks
    uniformly at random), ``n_gallery``, ``nearest`` (subject; empty without a face).
    """
    for test_set, gallery in galleries.items():
        for subject, vertices in gallery.items():
            if not len(in_region(vertices, region)):
                raise ValueError(
                    f"the gallery face of {subject} ({test_set}) has no vertex in the face region"
                )
    trees: dict[tuple[str, str], dict] = {}

    def gallery_trees(test_set: str, layer: str) -> dict:
        """The test set's gallery faces inside one layer of the region (None: no vertex)."""
        if (test_set, layer) not in trees:
            part = region.layer(layer) if region is not None else None
            trees[test_set, layer] = {
                subject: (cKDTree(kept) if len(kept := in_region(vertices, part)) else None)
                for subject, vertices in galleries.get(test_set, {}).items()
            }
        return trees[test_set, layer]

    rows = []
    for i, probe in enumerate(probes):
        layer = probe_layer(probe)
        gallery = gallery_trees(probe["test_set"], layer)
        if probe["subject"] not in gallery:
            raise ValueError(
                f"probe subject {probe['subject']} has no face in the {probe['test_set']} gallery"
            )
        subjects = list(gallery)
        own = subjects.index(probe["subject"])
        labels = {k: v for k, v in probe.items() if k != "vertices"}
        kept = in_region(probe["vertices"], region.layer(layer) if region is not None else None)
        points = probe_subset(kept, probe_vertices, [seed, i])
        dist = np.full(len(subjects), np.nan)
        if len(points):
            dist = np.array(
                [
                    np.inf
                    if gallery[s] is None
                    else gallery[s].query(points, workers=workers)[0].mean()
                    for s in subjects
                ]
            )
        rng = np.random.default_rng([seed, i, 1])
        rows.append(
            {
                **labels,
                "n_vertices": len(kept),
                "distance_own_mm": float(dist[own]),
                "rank": rank_of_own(dist, own, rng),
                "n_gallery": len(subjects),
                "nearest": subjects[int(np.argmin(dist))] if len(points) else "",
            }
        )
    return pd.DataFrame(rows, columns=RANK_COLUMNS) if not rows else pd.DataFrame(rows)


def reported_rank(k: int, n_gallery: int) -> bool:
    """Whether rank-k is reported for a gallery of ``n_gallery`` faces: k under half of it."""
    return k < n_gallery / 2


def _probe_order(frame: pd.DataFrame) -> pd.DataFrame:
    order = {t: i for i, t in enumerate(PROBE_TYPES)}
    key = frame["image_type"].map(lambda t: order.get(t, len(order)))
    return (
        frame.assign(_order=key)
        .sort_values(["test_set", "_order", "image"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def summarise_ranks(ranks: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rank-k rates per test set, image type and image, with percentile bootstrap 95% CIs over
    probes, beside chance (k / N for the test set's N gallery faces); NaN where k >= N / 2
    (:func:`reported_rank`). ``n_no_face`` counts the probes with no face: a ``no_face``
    column where the ranks have one (a face recognizer's, whose probes without a face have no
    rank: never identified, last for the median), else no vertex left in the region (ranked at
    random). Rows in the order of :data:`PROBE_TYPES` (the ceiling, ``original``, first)."""
    rows = []
    for key, group in ranks.groupby(list(SUMMARY_KEYS), sort=True):
        n_gallery = int(group["n_gallery"].iloc[0])
        no_face = group["no_face"].astype(bool) if "no_face" in group else group["n_vertices"] == 0
        row = dict(zip(SUMMARY_KEYS, key, strict=True))
        row.update(
            {
                "n_probes": len(group),
                "n_no_face": int(no_face.sum()),
                "n_gallery": n_gallery,
                "median_rank": float(group["rank"].fillna(n_gallery).median()),
            }
        )
        for k in RANKS:
            ci = {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}
            if reported_rank(k, n_gallery):
                hits = (group["rank"] <= k).astype(float).to_numpy()
                ci = bootstrap_mean_ci(hits, n_resamples=n_resamples, seed=seed)
            row[f"rank{k}_rate"] = ci["mean"]
            row[f"rank{k}_ci_low"] = ci["ci_low"]
            row[f"rank{k}_ci_high"] = ci["ci_high"]
            row[f"chance_rank{k}"] = k / n_gallery if reported_rank(k, n_gallery) else np.nan
        rows.append(row)
    columns = [*SUMMARY_KEYS, "n_probes", "n_no_face", "n_gallery", "median_rank"]
    for k in RANKS:
        columns += [f"rank{k}_rate", f"rank{k}_ci_low", f"rank{k}_ci_high", f"chance_rank{k}"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return _probe_order(pd.DataFrame(rows, columns=columns))


def rank_table(summary: pd.DataFrame, ranks: Sequence[int], *, median_rank: bool) -> pd.DataFrame:
    """The Markdown table of a re-identification summary (one row per test set and image):
    probes, no face, gallery size, optionally the median rank, then per k in ``ranks`` the
    rank-k rate with its CI and its chance. Both matchers (surface, face recognition) use it."""
    columns = {
        "Testing set": summary["test_set"],
        "Image": summary["image"],
        "Image type": summary["image_type"],
        "Probes": summary["n_probes"],
        "No face": summary["n_no_face"],
        "Gallery": summary["n_gallery"],
    }
    if median_rank:
        columns["Median rank"] = summary["median_rank"]
    for k in ranks:
        columns[f"Rank-{k} rate [95% CI]"] = [
            format_ci(r, lo, hi)
            for r, lo, hi in zip(
                summary[f"rank{k}_rate"],
                summary[f"rank{k}_ci_low"],
                summary[f"rank{k}_ci_high"],
                strict=True,
            )
        ]
    for k in ranks:
        columns[f"Chance rank-{k}"] = summary[f"chance_rank{k}"].round(3)
    return pd.DataFrame(columns)


def _markdown(summary: pd.DataFrame, notes: Sequence[str]) -> str:
    title = (
        "Re-identification: rank of each test subject's own gallery face (an independent "
        "acquisition of it) among the gallery faces of its test set, by MASD in template "
        "space (image -> gallery), over the face region only."
    )
    if summary.empty:
        return f"{title}\n\nNot computed.\n\n" + "".join(f"- {n}\n" for n in notes)
    shown = [k for k in RANKS if summary[f"rank{k}_rate"].notna().any()]
    table = rank_table(summary, shown, median_rank=True)
    return (
        f"{title}\n\n"
        + table.to_markdown(index=False)
        + "\n\nRates are means over probes with percentile bootstrap 95% CIs; `original` rows "
        "are the ceiling (the subject's own original against the gallery); ties, and an image "
        "with no face left in the region (No face), rank at random; chance is k / N for a "
        "gallery of N faces, and rank-k is shown only where k < N / 2.\n"
        + "".join(f"\n- {n}" for n in notes)
        + ("\n" if notes else "")
    )


def _probe_entries(probes: list[dict]) -> list[dict]:
    """One probe per subject and image from the face files (an image shared by several
    defacers, such as the population average, once); an array named ``image_type__image``, or
    a bare name (the original) that is both."""
    seen, entries = set(), []
    for entry in probes:
        for name, vertices in load_faces(entry["faces"]).items():
            image_type, _, image = name.partition("__")
            image = image or image_type
            key = (entry["subject"], image_type, image)
            if key in seen:
                continue
            seen.add(key)
            entries.append(
                {
                    "subject": entry["subject"],
                    "test_set": entry["test_set"],
                    "image_type": image_type,
                    "image": image,
                    "vertices": vertices,
                }
            )
    return entries


def _gallery_face(path: str | os.PathLike) -> np.ndarray:
    faces = load_faces(path)
    if "gallery" not in faces:
        raise ValueError(
            f"{path} holds no gallery face (arrays: {', '.join(faces) or 'none'}); the gallery "
            "is an independent acquisition written by align_gallery_face"
        )
    return faces["gallery"]


def _region_note(sidecar: str | os.PathLike | None) -> list[str]:
    if sidecar is None or not Path(sidecar).exists():
        return []
    info = json.loads(Path(sidecar).read_text())
    return [
        f"Face region: the union of what {', '.join(info['defacers'])} removed from "
        f"{len(info['subjects'])} test subjects, in template space, dilated by "
        f"{info['dilation_mm']:g} mm ({info['volume_ml']:g} mL)."
    ]


def reidentify_faces(
    gallery: dict[str, dict[str, str | os.PathLike]],
    probes: list[dict],
    out: dict[str, str | os.PathLike],
    *,
    region: dict[str, str | os.PathLike] | None = None,
    notes: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    probe_vertices: int = PROBE_VERTICES,
    workers: int = -1,
    face_recognition_summary: str | os.PathLike | None = None,
    face_recognition_markdown: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Re-identification over files.

    Args:
        gallery: ``test set -> {subject -> npz}`` of the gallery faces in template space
            (:func:`~defaceaudit.metrics.template_space.align_gallery_face`); empty: the test
            is off, and ``notes`` say why.
        probes: ``{"subject", "test_set", "faces": npz}``; every array in the npz is a probe
            (:func:`_probe_entries`): the originals' faces of
            :func:`~defaceaudit.metrics.template_space.align_face_to_template` (the ceiling) and
            each metric job's faces.
        out: paths ``ranks`` (TSV, one row per probe), ``summary`` (TSV), ``markdown``.
        region: ``{"mask": NIfTI, "sidecar": JSON}`` of the face region (None: whole faces).
        notes: lines added under the Markdown table (why a test set is left out).
        probe_vertices, workers: as in :func:`rank_probes` (``seed`` seeds the subsets too).
        face_recognition_summary, face_recognition_markdown: the face-recognition matcher's
            summary (TSV) and table (Markdown) of
            :func:`defaceaudit.metrics.face_recognition.match_face_embeddings`: its rows join
            the summary and its table follows this one (None: not run).
    The summary's ``matcher`` column tells the rows apart: ``surface`` (these ranks) or
    ``face_recognition``.
    """
    face_region = None
    if region:
        sidecar = region.get("sidecar")
        layers = json.loads(Path(sidecar).read_text()).get("layers", []) if sidecar else []
        face_region = FaceRegion.load(region["mask"], layers)
    notes = [*(_region_note(region.get("sidecar")) if region else []), *notes]
    galleries = {
        test_set: {s: _gallery_face(p) for s, p in faces.items()}
        for test_set, faces in gallery.items()
    }
    ranks = rank_probes(
        galleries,
        _probe_entries(probes),
        region=face_region,
        probe_vertices=probe_vertices,
        seed=seed,
        workers=workers,
    )
    summary = summarise_ranks(ranks, n_resamples=n_resamples, seed=seed)
    summary.insert(0, "matcher", "surface")
    text = _markdown(summary, notes)
    if face_recognition_summary:
        recognized = read_tsv(face_recognition_summary, "face-recognition summary")
        summary = pd.concat([summary, recognized], ignore_index=True)[summary.columns]
    if face_recognition_markdown:
        text += "\n" + Path(face_recognition_markdown).read_text()
    write_tsv(_probe_order(ranks) if len(ranks) else ranks, out["ranks"])
    write_tsv(summary, out["summary"])
    with atomic_path(out["markdown"]) as tmp:
        tmp.write_text(text)
    return summary
