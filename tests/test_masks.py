import nibabel as nib
import numpy as np
from synthetic import synthetic_head

from defaceaudit.masks import face_volume_ml, head_mask


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def true_head(img):
    shape = img.shape
    x, y, z = nib.affines.apply_affine(img.affine, np.indices(shape).reshape(3, -1).T).T
    head = (x / 75) ** 2 + (y / 95) ** 2 + ((z - 10) / 85) ** 2 <= 1
    return head.reshape(shape)


def test_head_mask_fills_skull_and_cavities_and_ignores_noise():
    img, brain = synthetic_head(nose=False, seed=3)
    data = img.get_fdata()
    truth = true_head(img)
    cavity = np.zeros_like(truth)
    cavity[20:28, 40:45, 23:28] = True  # an enclosed air cavity (sinus-like) inside the head
    data[cavity] = np.abs(np.random.default_rng(0).normal(0, 15, cavity.sum()))
    # a bias field: darker below
    data *= np.linspace(0.5, 1.2, data.shape[2])[None, None, :]
    mask = head_mask(data, (4.0, 4.0, 4.0))
    assert mask[cavity].all()
    assert dice(mask, truth) > 0.95
    corner = np.zeros_like(mask)
    corner[:5, :5, :5] = True
    assert not mask[corner].any()


def test_head_mask_is_scale_free():
    img, _ = synthetic_head(seed=4)
    data = img.get_fdata()
    assert np.array_equal(head_mask(data, (4, 4, 4)), head_mask(data * 37.5, (4, 4, 4)))


def test_face_volume_drops_when_the_face_is_removed():
    img, brain = synthetic_head(nose=True, seed=5)
    head = head_mask(img.get_fdata(), (4.0, 4.0, 4.0))
    whole = face_volume_ml(head, brain, img.affine)
    y = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)[:, 1]
    z = nib.affines.apply_affine(img.affine, np.indices(img.shape).reshape(3, -1).T)[:, 2]
    face = ((y > 60) & (z < 20)).reshape(img.shape)
    defaced = head & ~face
    assert whole > 40
    assert face_volume_ml(defaced, brain, img.affine) < 0.1 * whole
