"""Photo-like renderings of a head's skin surface, for a face recognizer.

What a person (or a face recognition service) would see of the head in an MR image: its skin
surface, lit like a face in a photograph, from the front and a few oblique angles. Headless and
deterministic: pure NumPy/SciPy, no OpenGL or display.

Steps for one image (:func:`render_views`):

1. The head mask (:func:`defaceaudit.imaging.masks.head_mask`: Otsu on log intensities plus
   morphology) as a float field, smoothed with a Gaussian of :data:`SURFACE_SIGMA_MM` mm: its
   0.5 level set is the skin, smooth below the voxel size, so a 2.5 mm image does not render as
   terraces. For a defaced image this is the head as the defacer left it (flat cuts, voxels
   blurred or zeroed away).
2. Each :class:`View` is an orthographic camera turned about the head's centre by a yaw (left-
   right) and a pitch (up-down), looking at the face. Rays are sampled at most one voxel apart
   through the trilinear field; the first crossing of 0.5 from the camera's side is refined by
   linear interpolation between the two samples around it (sub-voxel depth).
3. The normal is the field's negative gradient at the hit (trilinear on the central-difference
   gradient volumes); the brightness is Lambertian ``ambient + diffuse * max(0, n . l)`` for a
   light ``l`` fixed to the camera, plus a faint Blinn-Phong highlight (skin is a little shiny,
   and the highlight marks the nose and the brow ridges as in a photograph); the background is
   black.

Arrays are ``[X, Y, Z]`` on a RAS grid (+x = the patient's right, +y = anterior, +z = superior);
the output images are ``[H, W]`` uint8, row 0 at the top (superior), the patient's right on the
viewer's left as when facing the person.

**Renderings of real heads are identifiable faces**: write them under ``results/`` (git-ignored)
or a temporary folder, never into version control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from defaceaudit.imaging.masks import gaussian_filter, head_mask

__all__ = [
    "DEFAULT_VIEWS",
    "SURFACE_SIGMA_MM",
    "View",
    "render_view",
    "render_views",
    "surface_field",
]

#: Gaussian (sigma, mm) that smooths the binary head mask into the field whose 0.5 level set is
#: rendered as the skin: about the voxel size of a 2.5 mm image, small enough to keep the nose,
#: the lips and the eye sockets
SURFACE_SIGMA_MM = 2.0
#: side of a pixel (mm): a 200 mm field of view in 224 pixels, the face about 130 px high, which
#: dlib's frontal detector finds (faces over about 80 px) and its 150 px aligned crop keeps
PIXEL_MM = 0.9
IMAGE_SIZE = 224
AMBIENT = 0.12
DIFFUSE = 0.8
SPECULAR = 0.12
SHININESS = 12.0
#: how far below the head's centroid (mm) the camera aims: about the nose tip of an adult head
FACE_DROP_MM = 35.0
#: depth samples per ray fetched at once (memory ~ size^2 x block x 3 floats)
DEPTH_BLOCK = 16


@dataclass(frozen=True)
class View:
    """One camera: turned ``yaw_deg`` about the superior axis (positive: moved towards the
    patient's left, so the viewer sees more of the left cheek) and then ``pitch_deg`` about its
    left-right axis (positive: from above), lit from the direction ``light`` (x to the viewer's
    right, y up, z towards the viewer, in the camera's frame; normalised before use). The
    default light comes from above and the viewer's left, like a studio key light."""

    name: str
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    light: tuple[float, float, float] = (-0.3, 0.4, 1.0)


#: the frontal view and a few oblique views and lights, as a face photograph series would have
DEFAULT_VIEWS = (
    View("frontal"),
    View("frontal_side_lit", light=(0.6, 0.3, 1.0)),
    View("left15", yaw_deg=15.0),
    View("right15", yaw_deg=-15.0),
    View("above10", pitch_deg=10.0),
)


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


@dataclass(frozen=True)
class SurfaceField:
    """The smoothed head field ``values`` ``[X, Y, Z]`` float32 (skin at 0.5), its gradient
    (d values / d voxel index, three arrays like ``values``), the grid's ``affine`` (4x4, RAS
    mm), the centroid of the head mask (world mm, ``[3]``) and the centres of the mask's
    boundary voxels (world mm, ``[M, 3]``: where each ray meets the skin, give or take the
    smoothing)."""

    values: np.ndarray
    gradient: tuple[np.ndarray, np.ndarray, np.ndarray]
    affine: np.ndarray
    centre_mm: np.ndarray
    boundary_mm: np.ndarray


def surface_field(
    data: np.ndarray, affine: np.ndarray, head: np.ndarray | None = None
) -> SurfaceField:
    """The field rendered as skin, from a T1w volume ``data`` ``[X, Y, Z]`` on a RAS grid
    (``affine`` 4x4, mm) and its bool head mask (found with
    :func:`~defaceaudit.imaging.masks.head_mask` when None). Raises ValueError when there is no
    head."""
    vox = _voxel_sizes(affine)
    if head is None:
        head = head_mask(np.asarray(data, dtype=np.float32), vox)
    head = np.asarray(head, dtype=bool)
    if not head.any():
        raise ValueError("no head to render")
    # a margin of air so that the field falls to 0 inside the grid on every side
    pad = int(np.ceil(3 * SURFACE_SIGMA_MM / vox.min())) + 1
    head = np.pad(head, pad)
    shift = np.eye(4)
    shift[:3, 3] = -pad
    affine = np.asarray(affine, dtype=float) @ shift
    field = gaussian_filter(head.astype(np.float32), SURFACE_SIGMA_MM / vox, mode="constant")
    gradient = tuple(np.gradient(field))

    def world(mask: np.ndarray) -> np.ndarray:
        return np.argwhere(mask) @ affine[:3, :3].T + affine[:3, 3]

    boundary = head & ~ndimage.binary_erosion(head)
    return SurfaceField(field, gradient, affine, world(head).mean(axis=0), world(boundary))  # type: ignore[arg-type]


def _camera(view: View) -> np.ndarray:
    """``[3, 3]``: columns are the camera's right, up and towards-the-viewer axes in RAS world.

    Frontal: the viewer's right is the patient's left (-x), up is +z and the camera stands in
    front (+y). The yaw turns the camera about world z, then the pitch about its own right axis.
    """
    frontal = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).T
    yaw, pitch = np.radians(view.yaw_deg), np.radians(view.pitch_deg)
    # positive yaw moves the camera towards the patient's left (-x)
    turn = np.array(
        [[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
    )
    axes = turn @ frontal
    # positive pitch lifts the camera: rotate up and towards about right (Rodrigues)
    right, up, towards = axes.T
    c, s = np.cos(pitch), np.sin(pitch)
    return np.stack([right, c * up - s * towards, c * towards + s * up], axis=1)


def _first_crossing(
    values: np.ndarray,
    start: np.ndarray,
    direction: np.ndarray,
    entry: np.ndarray,
    floor: float,
    step: float,
) -> np.ndarray:
    """Depth (mm along ``direction``, from ``start``) where each ray first reaches 0.5.

    ``start`` ``[N, 3]`` and ``direction`` ``[3]`` are in voxel coordinates per mm of depth;
    ray ``i`` is sampled at depths ``entry[i], entry[i] - step, ...`` down to ``floor`` (in the
    air at ``entry[i]``: it is counted as outside). Samples go through
    :func:`scipy.ndimage.map_coordinates` (trilinear, 0 outside the grid) a block of steps at a
    time, only for the rays still in the air; the crossing is interpolated linearly between the
    last sample outside and the first inside. NaN where a ray never enters the head.
    """
    n = len(start)
    hit = np.full(n, np.nan)
    previous = np.zeros(n, dtype=np.float32)  # the sample before the block: air at the entry
    n_steps = int(np.ceil((np.max(entry, initial=floor) - floor) / step)) + 1
    for first in range(0, n_steps, DEPTH_BLOCK):
        todo = np.flatnonzero(np.isnan(hit) & (entry - first * step >= floor))
        if not len(todo):
            break
        depth = entry[todo, None] - step * np.arange(first, first + DEPTH_BLOCK)  # [T, B]
        points = start[todo, :, None] + direction[None, :, None] * depth[:, None, :]
        samples = ndimage.map_coordinates(
            values, points.transpose(1, 0, 2).reshape(3, -1), order=1, mode="constant"
        ).reshape(depth.shape)
        samples = np.concatenate([previous[todo, None], samples], axis=1)
        depth = np.concatenate([depth[:, :1] + step, depth], axis=1)
        inside = samples >= 0.5
        entered = np.flatnonzero(inside.any(axis=1))
        k = np.argmax(inside[entered], axis=1)  # >= 1: sample 0 was outside
        before, after = samples[entered, k - 1], samples[entered, k]
        frac = np.clip((0.5 - before) / np.maximum(after - before, 1e-6), 0.0, 1.0)
        d0, d1 = depth[entered, k - 1], depth[entered, k]
        hit[todo[entered]] = d0 + frac * (d1 - d0)
        previous[todo] = samples[:, -1]
    return hit


def _entry_depths(
    surface: SurfaceField, look_at: np.ndarray, axes: np.ndarray, size: int, pixel_mm: float
) -> tuple[np.ndarray, float]:
    """Per pixel ``[size * size]``: the depth (mm towards the viewer from the image plane
    through ``look_at``) at which its ray starts, just in front of the nearest boundary voxel
    that projects near it (-inf: no voxel does, the ray misses the head); and the depth
    behind the head where every ray stops. Rays so start a few samples before the skin
    instead of at the edge of the grid."""
    vox = _voxel_sizes(surface.affine)
    rel = surface.boundary_mm - look_at
    half = (size - 1) / 2.0
    cols = np.rint(rel @ axes[:, 0] / pixel_mm + half).astype(np.int64)
    rows = np.rint(half - rel @ axes[:, 1] / pixel_mm).astype(np.int64)
    depth = rel @ axes[:, 2]
    keep = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    front = np.full(size * size, -np.inf)
    np.maximum.at(front, rows[keep] * size + cols[keep], depth[keep])
    # voxels larger than pixels leave gaps between their centres: spread each over its width
    reach = 2 * int(np.ceil(vox.max() / pixel_mm)) + 1
    front = ndimage.grey_dilation(front.reshape(size, size), size=(reach, reach)).reshape(-1)
    # the 0.5 level of the smoothed mask lies within about a voxel of the boundary voxels
    margin = 3.0 * SURFACE_SIGMA_MM + float(np.linalg.norm(vox))
    floor = float(depth.min(initial=0.0)) - margin
    return front + margin, floor


def render_view(
    surface: SurfaceField,
    view: View,
    *,
    size: int = IMAGE_SIZE,
    pixel_mm: float = PIXEL_MM,
) -> np.ndarray:
    """One view of ``surface``: uint8 ``[size, size]`` (0 = background), row 0 superior.

    Orthographic: the image plane is ``size`` x ``size`` pixels of ``pixel_mm``, centred on a
    point :data:`FACE_DROP_MM` below the head's centre (the face lies in front of and below the
    brain; a turned camera turns about that point); rays are sampled every ``min(voxel size)``
    mm from just in front of the skin (:func:`_entry_depths`).
    """
    affine = surface.affine
    vox = _voxel_sizes(affine)
    to_voxel = np.linalg.inv(affine)
    axes = _camera(view)
    right, up, towards = axes.T
    look_at = surface.centre_mm - np.array([0.0, 0.0, FACE_DROP_MM])
    offsets = (np.arange(size) - (size - 1) / 2.0) * pixel_mm
    across, down = np.meshgrid(offsets, offsets)  # columns to the right, rows downwards
    plane = look_at + across.reshape(-1, 1) * right - down.reshape(-1, 1) * up  # [N, 3] mm
    start = plane @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    direction = to_voxel[:3, :3] @ towards  # voxel coordinates per mm of depth
    entry, floor = _entry_depths(surface, look_at, axes, size, pixel_mm)
    depth = _first_crossing(surface.values, start, direction, entry, floor, float(vox.min()))
    image = np.zeros(size * size, dtype=np.float32)
    hits = np.flatnonzero(np.isfinite(depth))
    if len(hits):
        points = (start[hits] + direction * depth[hits, None]).T  # voxel coordinates [3, M]
        gradient = np.stack(
            [ndimage.map_coordinates(g, points, order=1, mode="nearest") for g in surface.gradient]
        )
        # d(field)/d(voxel index) -> d(field)/d(world mm): the inverse-transpose of the affine
        normal = -(to_voxel[:3, :3].T @ gradient).T  # outward: the field falls outside the head
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        light = axes @ (np.asarray(view.light, dtype=float) / np.linalg.norm(view.light))
        halfway = (light + towards) / np.linalg.norm(light + towards)
        diffuse = np.clip(normal @ light, 0.0, 1.0)
        specular = np.clip(normal @ halfway, 0.0, 1.0) ** SHININESS
        image[hits] = AMBIENT + DIFFUSE * diffuse + SPECULAR * specular
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8).reshape(size, size)


def render_views(
    data: np.ndarray,
    affine: np.ndarray,
    views: Sequence[View] = DEFAULT_VIEWS,
    *,
    head: np.ndarray | None = None,
    size: int = IMAGE_SIZE,
    pixel_mm: float = PIXEL_MM,
) -> dict[str, np.ndarray]:
    """``view name -> uint8 [size, size]`` renderings of the head in ``data`` ``[X, Y, Z]`` (RAS
    grid of ``affine``); ``head``: its bool mask (computed when None)."""
    surface = surface_field(data, affine, head)
    return {v.name: render_view(surface, v, size=size, pixel_mm=pixel_mm) for v in views}
