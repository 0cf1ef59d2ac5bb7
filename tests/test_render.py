"""QC figure: a PNG is written atomically; the depth renderer sees a sphere's pole in front."""

import numpy as np
from synthetic import synthetic_head

from defaceaudit.imaging.render import depth_map, render_qc_png, shade_depth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sphere(n=41, radius=15.0):
    c = (n - 1) / 2
    i, j, k = np.indices((n, n, n))
    return (i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2 <= radius**2, int(c)


def test_depth_map_of_sphere_peaks_at_centre():
    ball, c = _sphere()
    depth = depth_map(ball, (2.0, 2.0, 2.0))
    assert depth.shape == (41, 41)
    assert np.unravel_index(np.nanargmax(depth), depth.shape) == (c, c)
    assert np.nanmax(depth) == (c + 15 + 0.5) * 2.0  # pole voxel j = c + 15, centre in mm
    assert np.isnan(depth[0, 0])  # a corner column holds no sphere
    shaded = shade_depth(depth, (2.0, 2.0, 2.0))
    valid = np.isfinite(shaded)
    assert np.array_equal(valid, np.isfinite(depth))
    assert np.nanmin(shaded) >= 0.0 and np.nanmax(shaded) <= 1.0
    # the front-facing pole is lit; the limb (grazing normals) is darker
    assert shaded[c, c] > 0.5 > np.nanmin(shaded)


def test_render_qc_png(tmp_path):
    img, brain = synthetic_head()
    original = img.get_fdata()
    defaced = original.copy()
    y = np.indices(original.shape)[1] * 4.0 + img.affine[1, 3]
    z = np.indices(original.shape)[2] * 4.0 + img.affine[2, 3]
    defaced[(y > 60) & (z < 20)] = 0.0
    out = tmp_path / "qc" / "sub-01_pydeface.png"
    render_qc_png(original, defaced, None, img.affine, out, "sub-01 / pydeface")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 10_000 < len(data) < 2_000_000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    # with an explicit head mask, overwriting in place
    render_qc_png(original, defaced, defaced > 300, img.affine, out, "again")
    assert out.read_bytes()[:8] == PNG_MAGIC
