"""Re-identification against an independent gallery, over the face region only: analytic
answers on vertex clouds (a probe identical to its gallery face ranks first; a probe whose
face is blanked ranks at chance), the face region in template space, the tables."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from defaceaudit.metrics.reidentify import (
    rank_of_own,
    rank_probes,
    reidentify_faces,
    reported_rank,
    summarise_ranks,
)
from defaceaudit.metrics.template_space import (
    FaceRegion,
    build_face_region,
    face_region,
    save_faces,
)

#: the face region of the vertex-cloud heads below: everything in front of y = 40 mm
REGION = FaceRegion(
    np.arange(100)[None, :, None].repeat(100, 0).repeat(100, 2) >= 70,
    np.array([[2.0, 0, 0, -100], [0, 2.0, 0, -100], [0, 0, 2.0, -100], [0, 0, 0, 1]]),
)


def _head(scalp_mm, nose_mm, rng, n=3000, noise_mm=0.0):
    """Vertices ``[n, 3]`` of a head: a sphere of radius ``scalp_mm`` (its scalp) whose front
    (y > 40 mm, the face region) is pushed out by ``nose_mm`` at the front pole; an independent
    acquisition adds ``noise_mm`` of jitter and other vertices."""
    v = rng.normal(size=(n, 3))
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    radius = scalp_mm + nose_mm * np.clip(v[:, 1], 0, None) ** 4
    return v * radius[:, None] + rng.normal(0, noise_mm, (n, 3))


def _subjects(rng, n):
    """Per subject: scalp radius and nose, both its own (so the untouched scalp identifies it
    as well as the face does)."""
    return {f"s{i}": (rng.uniform(55, 65), rng.uniform(5, 25)) for i in range(n)}


def _probe(subject, vertices, image_type="defaced"):
    return {
        "subject": subject,
        "test_set": "t",
        "image_type": image_type,
        "image": image_type,
        "vertices": vertices,
    }


def test_the_region_keeps_the_face_and_drops_the_scalp():
    rng = np.random.default_rng(0)
    head = _head(60, 15, rng)
    kept = REGION.contains(head)
    assert kept.any() and not kept.all()
    assert (head[kept, 1] >= 39).all() and (head[~kept, 1] < 41).all()
    assert not REGION.contains(np.array([[0.0, 500.0, 0.0]])).any()  # outside the grid


def test_a_probe_identical_to_its_gallery_face_ranks_first():
    rng = np.random.default_rng(1)
    people = _subjects(rng, 8)
    gallery = {s: _head(*p, rng, noise_mm=0.3) for s, p in people.items()}
    probes = [_probe(s, v.copy(), "original") for s, v in gallery.items()]
    for region in (None, REGION):
        ranks = rank_probes({"t": gallery}, probes, region=region, probe_vertices=0)
        assert (ranks["rank"] == 1).all() and (ranks["distance_own_mm"] == 0).all()
        assert (ranks["nearest"] == ranks["subject"]).all()
    summary = summarise_ranks(ranks, n_resamples=100)
    assert summary.loc[0, "rank1_rate"] == 1.0 and summary.loc[0, "chance_rank1"] == 1 / 8


def test_a_probe_whose_face_is_blanked_ranks_at_chance_over_many_draws():
    rng = np.random.default_rng(2)
    draws, n_gallery, hits, hits_whole_head = 400, 5, 0, 0
    for draw in range(draws):
        people = _subjects(rng, n_gallery)
        # the gallery: an independent acquisition of each subject
        gallery = {s: _head(*p, rng, n=800, noise_mm=0.5) for s, p in people.items()}
        own = f"s{draw % n_gallery}"
        scan = _head(*people[own], rng, n=800, noise_mm=0.5)
        blanked = scan[~REGION.contains(scan)]  # the face gone, the scalp untouched
        probe = [_probe(own, blanked)]
        ranks = rank_probes({"t": gallery}, probe, region=REGION, seed=draw, probe_vertices=0)
        hits += int(ranks.loc[0, "rank"] == 1)
        assert ranks.loc[0, "n_vertices"] == 0 and ranks.loc[0, "nearest"] == ""
        whole = rank_probes({"t": gallery}, probe, seed=draw, probe_vertices=0)
        hits_whole_head += int(whole.loc[0, "rank"] == 1)
    # chance is 1 / 5; 3 binomial SDs over 400 draws are 0.06
    assert abs(hits / draws - 1 / n_gallery) < 0.06
    # over the whole head, the untouched scalp alone identifies the subject far above chance
    # (the flaw of comparing the crop that defacing leaves intact)
    assert hits_whole_head / draws > 0.6


def test_ties_break_at_random_and_a_faceless_probe_ranks_uniformly():
    rng = np.random.default_rng(0)
    distances = np.array([3.0, 1.0, 3.0, 3.0, np.nan])
    ranks = [rank_of_own(distances, 0, rng) for _ in range(3000)]
    assert set(ranks) == {2, 3, 4} and abs(np.mean(ranks) - 3.0) < 0.1
    nothing = np.full(4, np.nan)
    ranks = [rank_of_own(nothing, 2, rng) for _ in range(4000)]
    assert set(ranks) == {1, 2, 3, 4} and abs(np.mean(np.array(ranks) == 1) - 0.25) < 0.03
    assert rank_of_own(np.array([0.0, 1.0]), 0, rng) == 1


def test_rank_k_is_reported_only_below_half_the_gallery():
    assert reported_rank(1, 3) and not reported_rank(1, 2)
    assert not reported_rank(5, 4) and not reported_rank(5, 10) and reported_rank(5, 11)
    rows = [
        {"test_set": t, "image_type": "defaced", "image": "x", "n_vertices": 5, "rank": r}
        for t, n in (("small", 4), ("large", 12))
        for r in range(1, n + 1)
    ]
    ranks = pd.DataFrame(rows)
    ranks["n_gallery"] = ranks["test_set"].map({"small": 4, "large": 12})
    summary = summarise_ranks(ranks, n_resamples=100).set_index("test_set")
    assert (
        summary.loc["small", "rank1_rate"] == 0.25 and summary.loc["small", "chance_rank1"] == 0.25
    )
    assert np.isnan(summary.loc["small", "rank5_rate"]) and np.isnan(
        summary.loc["small", "chance_rank5"]
    )
    assert summary.loc["large", "rank5_rate"] == pytest.approx(5 / 12)
    assert summary.loc["large", "chance_rank5"] == pytest.approx(5 / 12)


def test_face_region_is_the_union_in_template_space_dilated():
    grid = ((40, 40, 40), np.diag([2.0, 2.0, 2.0, 1.0]))  # template world 0..78 mm
    subject_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    box = np.zeros((80, 80, 80), bool)
    box[10:20, 10:20, 10:20] = True  # subject world 10..19 mm
    moved = np.eye(4)
    moved[:3, 3] = [40, 0, 0]  # the second subject sits 40 mm further right in the template
    undilated = face_region(
        [(box, subject_affine, np.eye(4)), (box, subject_affine, moved)], grid, 0
    )
    inside = np.array([[14.0, 14, 14], [54, 14, 14]])
    assert undilated.contains(inside).all()
    assert not undilated.contains(np.array([[34.0, 14, 14], [14, 30, 14]])).any()
    dilated = face_region([(box, subject_affine, np.eye(4))], grid, 6.0)
    assert dilated.contains(np.array([[24.0, 14, 14]])).all()  # 4-5 mm beyond the box
    assert not dilated.contains(np.array([[30.0, 14, 14]])).any()  # 10 mm beyond it


def test_build_face_region_from_files(tmp_path):
    template = tmp_path / "template.nii.gz"
    nib.save(
        nib.Nifti1Image(
            np.arange(8000, dtype=np.float32).reshape(20, 20, 20), np.diag([4.0, 4, 4, 1])
        ),
        template,
    )
    removed = np.zeros((40, 40, 40), np.uint8)
    removed[20:30, 30:40, 0:10] = 1
    mask = tmp_path / "removed.nii.gz"
    nib.save(nib.Nifti1Image(removed, np.diag([2.0, 2, 2, 1])), mask)
    transform = tmp_path / "xfm.json"
    transform.write_text(json.dumps({"subject_to_template_ras_mm": np.eye(4).tolist()}))
    out = {"mask": tmp_path / "region.nii.gz", "sidecar": tmp_path / "region.json"}
    region = build_face_region(
        {"a": {"transform": transform, "removed": [mask]}},
        template,
        out["mask"],
        out["sidecar"],
        dilation_mm=2.0,
        defacers=["cutter"],
    )
    assert region.contains(np.array([[50.0, 70, 10]])).all()
    assert not region.contains(np.array([[10.0, 10, 60]])).any()
    assert np.array_equal(FaceRegion.load(out["mask"]).mask, region.mask)
    assert json.loads(out["sidecar"].read_text())["defacers"] == ["cutter"]


def test_reidentify_files_ranks_originals_as_the_ceiling_and_shared_images_once(tmp_path):
    rng = np.random.default_rng(5)
    people = _subjects(rng, 4)
    gallery, probes = {}, []
    for subject, shape in people.items():
        gallery[subject] = tmp_path / f"{subject}_gallery.npz"
        save_faces(gallery[subject], {"gallery": _head(*shape, rng, noise_mm=0.3)})
        original = tmp_path / f"{subject}_original.npz"
        save_faces(original, {"original": _head(*shape, rng, noise_mm=0.3)})
        probes.append({"subject": subject, "test_set": "internal_test", "faces": original})
        for defacer in ("d1", "d2"):
            path = tmp_path / f"{subject}_{defacer}.npz"
            scalp_only = _head(shape[0], 0.0, rng)
            save_faces(
                path,
                {
                    f"defaced__{defacer}": scalp_only[~REGION.contains(scalp_only)],
                    "population_average__avg": _head(60, 15, rng),
                },
            )
            probes.append({"subject": subject, "test_set": "internal_test", "faces": path})
    region_mask = tmp_path / "region.nii.gz"
    nib.save(nib.Nifti1Image(REGION.mask.astype(np.uint8), REGION.affine), region_mask)
    out = {k: tmp_path / f"{k}.out" for k in ("ranks", "summary", "markdown")}
    summary = reidentify_faces(
        {"internal_test": gallery},
        probes,
        out,
        region={"mask": region_mask},
        notes=["external_test: off: 1 of its 1 subjects have a gallery image"],
        n_resamples=100,
    )
    ranks = pd.read_csv(out["ranks"], sep="\t")
    assert len(ranks) == 4 * 4  # the original, d1, d2 and the shared average per subject
    assert summary["image_type"].tolist()[0] == "original"
    by_image = summary.set_index("image")
    assert by_image.loc["original", "rank1_rate"] == 1.0  # the ceiling
    assert by_image.loc["d1", "n_no_face"] == 4
    assert by_image.loc["avg", "chance_rank1"] == 0.25
    assert by_image["rank5_rate"].isna().all()  # 5 is not under half a gallery of 4
    text = out["markdown"].read_text()
    assert "Rank-1 rate" in text and "Rank-5" not in text and "external_test: off" in text


def test_reidentification_off_writes_empty_tables_that_say_why(tmp_path):
    out = {k: tmp_path / f"{k}.out" for k in ("ranks", "summary", "markdown")}
    summary = reidentify_faces({}, [], out, notes=["internal_test: off: no gallery image"])
    assert summary.empty and "rank1_rate" in summary.columns
    assert "chance_rank1" in pd.read_csv(out["summary"], sep="\t").columns
    assert "rank" in pd.read_csv(out["ranks"], sep="\t").columns
    assert "Not computed" in out["markdown"].read_text()
    assert "internal_test: off" in out["markdown"].read_text()


def test_a_gallery_file_without_a_gallery_face_is_refused(tmp_path):
    old = tmp_path / "original.npz"
    save_faces(old, {"original": np.zeros((3, 3))})
    out = {k: tmp_path / f"{k}.out" for k in ("ranks", "summary", "markdown")}
    with pytest.raises(ValueError, match="holds no gallery face"):
        reidentify_faces({"t": {"a": old}}, [], out)
