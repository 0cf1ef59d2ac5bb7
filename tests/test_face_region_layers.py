"""Re-identification compares a defacer's images only where that defacer removes the face (its
layer of the face region), the originals over the whole region."""

import numpy as np

from defaceaudit.metrics.reidentify import probe_layer, rank_probes
from defaceaudit.metrics.template_space import FaceRegion


def _region():
    mask = np.ones((20, 10, 10), dtype=bool)
    left = np.zeros_like(mask)
    left[:10] = True
    return FaceRegion(mask, np.eye(4), {"a": left, "b": mask & ~left})


def _face(rng, shift):
    points = rng.uniform(0, 9, (400, 3))
    points[:, 0] = rng.uniform(0, 19, 400)
    return points + np.array([0.0, shift, 0.0])


def test_probe_layer_is_its_defacer():
    assert probe_layer({"image": "dpm_quickshear"}) == "quickshear"
    assert probe_layer({"image": "facemask"}) == "facemask"
    assert probe_layer({"image": "original"}) == "original"


def test_a_probe_counts_only_in_its_own_layer():
    rng = np.random.default_rng(0)
    gallery = {"t": {s: _face(rng, shift) for s, shift in (("s1", 0.0), ("s2", 0.4), ("s3", 0.8))}}
    own = gallery["t"]["s2"]
    right_half = own[own[:, 0] >= 10]  # skin where defacer "a" removed nothing
    ranks = []
    for draw in range(60):
        probes = [
            {"subject": "s2", "test_set": "t", "image": "a", "vertices": right_half},
            {"subject": "s2", "test_set": "t", "image": "original", "vertices": own},
        ]
        frame = rank_probes(gallery, probes, region=_region(), seed=draw, workers=1)
        ranks.append(frame["rank"].tolist())
    ranks = np.array(ranks)
    # the original matches itself over the whole region
    assert (ranks[:, 1] == 1).all()
    # the "a" probe has no skin in layer a: no vertex compared, its rank is a draw
    assert set(ranks[:, 0]) == {1, 2, 3}


def test_layers_survive_the_bit_mask(tmp_path):
    import nibabel as nib

    bits = np.zeros((4, 4, 4), dtype=np.uint8)
    bits[0] = 1  # layer a
    bits[1] = 2  # layer b
    bits[2] = 3  # both
    path = tmp_path / "region.nii.gz"
    nib.save(nib.Nifti1Image(bits, np.eye(4)), path)
    region = FaceRegion.load(path, ["a", "b"])
    assert region.mask[:3].all() and not region.mask[3].any()
    assert region.layer("a").mask[[0, 2]].all() and not region.layer("a").mask[1].any()
    assert region.layer("b").mask[[1, 2]].all() and not region.layer("b").mask[0].any()
    assert region.layer("original") is region
