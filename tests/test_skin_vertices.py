"""Re-identification matches skin only: a defacer's cut (next to its exact-zero fill) is dropped,
and refaced images never carry that fill marker."""

import numpy as np
import torch

from defaceaudit.metrics.surface import FaceCrop, face_vertices, fill_mask, skin_vertices
from defaceaudit.reface.cascade import _gamma, _zoom

SPACING = (2.0, 2.0, 2.0)


def _head(noisy: bool, cut: bool):
    rng = np.random.default_rng(0)
    shape = (30, 30, 30)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 15, axis=-1) <= 10
    image = np.where(ball, 100.0, rng.uniform(1, 10, shape) if noisy else 0.0)
    if cut:
        image[:, 20:, :] = 0.0  # the front of the head and the air before it zeroed
    return image.astype(np.float32), ball & (image > 0)


def test_vertices_on_the_cut_are_dropped_and_skin_kept():
    image, head = _head(noisy=True, cut=True)
    crop = FaceCrop(z_min=0, y_min=0)
    verts = face_vertices(head, crop, SPACING)
    kept = skin_vertices(verts, image, head, SPACING)
    on_cut = verts[:, 1] >= 18 * SPACING[1]
    assert on_cut.any() and 0 < len(kept) < len(verts)
    assert (kept[:, 1] < 18.5 * SPACING[1]).all()  # nothing of the cut plane survives
    # an untouched head keeps every vertex
    whole, whole_head = _head(noisy=True, cut=False)
    verts = face_vertices(whole_head, crop, SPACING)
    assert len(skin_vertices(verts, whole, whole_head, SPACING)) == len(verts)


def test_a_zero_background_keeps_every_vertex():
    image, head = _head(noisy=False, cut=True)
    assert fill_mask(image, head) is None
    verts = face_vertices(head, FaceCrop(z_min=0, y_min=0), SPACING)
    assert len(skin_vertices(verts, image, head, SPACING)) == len(verts)


def test_zoom_moves_volumes_together_and_gamma_keeps_the_ends():
    rng = np.random.default_rng(1)
    volume = torch.zeros(1, 12, 12, 12)
    volume[0, 4:8, 4:8, 4:8] = 1.0
    a, b = _zoom(rng, 0.2, volume, 2 * volume)
    assert torch.allclose(b, 2 * a) and not torch.equal(a, volume)
    assert _zoom(rng, 0.0, volume)[0] is volume
    (out,) = _gamma(rng, 0.5, torch.tensor([-1.0, 0.0, 1.0]))
    assert out[0] == -1 and out[2] == 1 and out[1] != 0
