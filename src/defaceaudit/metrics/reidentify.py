"""Re-identification from faces (beyond the paper): can an image's face pick out its subject?

Each test set's gallery is the ORIGINAL face of each of its subjects (an attacker matches an
image against the people of the dataset it came from). Each probe (a defaced, population-average
or refaced image of one test subject, cropped and registered to the template on its own, without
the original: :mod:`defaceaudit.metrics.face_rows`) is compared with every face of its test
set's gallery by MASD in template space (probe vertices -> nearest gallery vertex, as
``masd_mm``; see :mod:`defaceaudit.metrics.template_space`); the gallery is ranked by that
distance, and the probe's rank is the position of its own subject (1 = nearest). The rank-k
identification rate is the fraction of probes whose subject ranks k or better; chance is
min(k, N) / N for the N faces of that gallery. A probe with no face left identifies no one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from defaceaudit.face_tables import format_ci
from defaceaudit.metrics.template_space import load_faces
from defaceaudit.stats.bootstrap import bootstrap_mean_ci
from defaceaudit.tables import atomic_path, write_tsv

RANKS = (1, 5)
#: Probe vertices compared with each gallery face (a seeded random subset; 0 = all). The cost is
#: probes x gallery faces x vertices nearest-neighbour queries: at paper scale (7,000 probes,
#: nearly all against the 469 faces of the external test set, about 100,000 vertices per 1 mm
#: face) all vertices would take about two
#: CPU-days; 2,000 take about an hour, and the mean over 2,000 vertices estimates the MASD with a
#: standard error of 2 % of the distances' spread.
PROBE_VERTICES = 2000


def probe_subset(vertices: np.ndarray, n: int, seed: int | Sequence[int]) -> np.ndarray:
    """``n`` of a probe's ``vertices`` ``[M, 3]``, drawn without replacement by a generator
    seeded with ``seed`` (all of them when ``n`` is 0 or at least M)."""
    if n <= 0 or len(vertices) <= n:
        return vertices
    return vertices[np.random.default_rng(seed).choice(len(vertices), n, replace=False)]


def rank_probes(
    galleries: dict[str, dict[str, np.ndarray]],
    probes: list[dict],
    *,
    probe_vertices: int = PROBE_VERTICES,
    seed: int = 0,
    workers: int = -1,
) -> pd.DataFrame:
    """Rank of each probe's own subject among its test set's gallery.

    Args:
        galleries: ``test set -> {subject -> original face vertices [N, 3]}`` (template world,
            mm).
        probes: dicts with ``subject``, ``test_set``, ``vertices`` ``[M, 3]`` (M may be 0: no
            face left) and labels (``image_type``, ``image``, ``defacer``) copied to the output.
        probe_vertices: vertices of each probe compared with every gallery face
            (:func:`probe_subset`, the same subset for all of them; 0 = all).
        seed: the subsets' seed (probe ``i`` draws with ``[seed, i]``).
        workers: threads of each nearest-neighbour query (-1 = every CPU).
    Returns one row per probe: the labels, ``distance_own_mm`` (MASD to its own original, over
    the subset), ``rank`` (1 = its own original is the nearest; ties count against the probe,
    its own subject ranking after equally near ones; NaN for a probe with no face, which
    counts as not identified), ``n_gallery``, ``nearest`` (subject; empty without a face).
    """
    trees = {
        test_set: {s: cKDTree(v) for s, v in gallery.items()}
        for test_set, gallery in galleries.items()
    }
    rows = []
    for i, probe in enumerate(probes):
        gallery = trees.get(probe["test_set"], {})
        if probe["subject"] not in gallery:
            raise ValueError(
                f"probe subject {probe['subject']} has no face in the {probe['test_set']} gallery"
            )
        subjects = list(gallery)
        labels = {k: v for k, v in probe.items() if k != "vertices"}
        row = {**labels, "distance_own_mm": np.nan, "rank": np.nan, "nearest": ""}
        row["n_gallery"] = len(subjects)
        points = probe_subset(np.asarray(probe["vertices"]), probe_vertices, [seed, i])
        if len(points):
            dist = np.array([gallery[s].query(points, workers=workers)[0].mean() for s in subjects])
            own = dist[subjects.index(probe["subject"])]
            row.update(
                distance_own_mm=float(own),
                rank=int(np.sum(dist <= own)),
                nearest=subjects[int(np.argmin(dist))],
            )
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_ranks(ranks: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rank-1 and rank-5 rates per test set, image type and image, with percentile bootstrap
    95% CIs over probes, beside chance (min(k, N) / N for the test set's N gallery faces).
    ``n_no_face`` counts the probes with no face left (in the rates as not identified)."""
    rows = []
    keys = ["test_set", "image_type", "image"]
    for key, group in ranks.groupby(keys, sort=True):
        n_gallery = int(group["n_gallery"].iloc[0])
        row = dict(zip(keys, key, strict=True))
        row.update(
            {
                "n_probes": len(group),
                "n_no_face": int(group["rank"].isna().sum()),
                "n_gallery": n_gallery,
            }
        )
        for k in RANKS:
            ci = bootstrap_mean_ci(
                (group["rank"] <= k).astype(float).to_numpy(), n_resamples=n_resamples, seed=seed
            )
            row[f"rank{k}_rate"] = ci["mean"]
            row[f"rank{k}_ci_low"] = ci["ci_low"]
            row[f"rank{k}_ci_high"] = ci["ci_high"]
            row[f"chance_rank{k}"] = min(k, n_gallery) / n_gallery
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(summary: pd.DataFrame) -> str:
    table = pd.DataFrame(
        {
            "Testing set": summary["test_set"],
            "Image": summary["image"],
            "Image type": summary["image_type"],
            "Probes": summary["n_probes"],
            "No face": summary["n_no_face"],
            "Gallery": summary["n_gallery"],
            **{
                f"Rank-{k} rate [95% CI]": [
                    format_ci(r, lo, hi)
                    for r, lo, hi in zip(
                        summary[f"rank{k}_rate"],
                        summary[f"rank{k}_ci_low"],
                        summary[f"rank{k}_ci_high"],
                        strict=True,
                    )
                ]
                for k in RANKS
            },
            **{f"Chance rank-{k}": summary[f"chance_rank{k}"].round(2) for k in RANKS},
        }
    )
    return (
        "Re-identification: rank of each test subject's own original face among the original "
        "faces of its test set (the gallery), by MASD in template space (image -> original).\n\n"
        + table.to_markdown(index=False)
        + "\n\nRates are means over probes with percentile bootstrap 95% CIs; an image with no "
        "face left (No face) counts as not identified; chance is min(k, N) / N for a gallery of "
        "N faces.\n"
    )


def reidentify_files(
    gallery: dict[str, dict[str, str | os.PathLike]],
    probes: list[dict],
    out: dict[str, str | os.PathLike],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    probe_vertices: int = PROBE_VERTICES,
    workers: int = -1,
) -> pd.DataFrame:
    """Re-identification over files.

    Args:
        gallery: ``test set -> {subject -> npz}`` of the originals' faces in template space
            (:func:`~defaceaudit.metrics.template_space.align_to_template`).
        probes: ``{"subject", "test_set", "defacer", "faces": npz}`` per subject and defacer;
            every ``image_type__image`` array in the npz is a probe (an image shared by several
            defacers, such as the population-average face, is ranked once).
        out: paths ``ranks`` (TSV, one row per probe), ``summary`` (TSV), ``markdown``.
        probe_vertices, workers: as in :func:`rank_probes` (``seed`` seeds the subsets too).
    """
    galleries = {
        test_set: {s: load_faces(p)["original"] for s, p in faces.items()}
        for test_set, faces in gallery.items()
    }
    seen, probe_list = set(), []
    for entry in probes:
        for name, vertices in load_faces(entry["faces"]).items():
            image_type, image = name.split("__", 1)
            key = (entry["subject"], image)
            if key in seen:
                continue
            seen.add(key)
            probe_list.append(
                {
                    "subject": entry["subject"],
                    "test_set": entry["test_set"],
                    "image_type": image_type,
                    "image": image,
                    "vertices": vertices,
                }
            )
    ranks = rank_probes(
        galleries, probe_list, probe_vertices=probe_vertices, seed=seed, workers=workers
    )
    summary = summarise_ranks(ranks, n_resamples=n_resamples, seed=seed)
    write_tsv(ranks, out["ranks"])
    write_tsv(summary, out["summary"])
    with atomic_path(out["markdown"]) as tmp:
        tmp.write_text(_markdown(summary))
    return summary
