"""Synthetic subjects from one real base head: affine, smooth deformation, anatomy, bias, noise.

Every subject image is the base head resampled through one backward map, built in world
coordinates (mm, RAS) so that the same seed gives the same anatomy at any voxel size:

    p (subject, mm)  --smooth deformation u(p)-->  p + u(p)
                     --inverse random affine about the brain centroid (scale x sex, rotation,
                       translation)-->  q
                     --ventricles: radial expansion about the brain centroid that grows with age-->
                     --face: anterior stretch of the lower face by t_i mm at the nose tip-->  base

then multiplied by a smooth bias field and a global gain, and given Rician noise. The brain mask
of the base (a real brain extraction) goes through the same map.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from defaceaudit.cohort.demo.plan import DemoSubject

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class SynthParams:
    """How subjects differ from their base head (mm, degrees, percent)."""

    voxel_size_mm: float = 2.0
    fov_mm: tuple[float, float, float] = (192.0, 272.0, 224.0)
    #: centre of the output grid relative to the base's brain centroid (RAS mm): the face and
    #: the chin are in front of and below the brain
    fov_offset_mm: tuple[float, float, float] = (0.0, 24.0, -20.0)
    scale_pct: float = 3.0
    rotation_deg: float = 4.0
    translation_mm: float = 3.0
    deformation_rms_mm: float = 2.0
    deformation_smoothness_mm: float = 10.0
    bias_field_pct: float = 10.0
    noise_pct: float = 2.0
    sex_head_scale_pct: float = 3.0
    ventricle_expansion_mm: float = 2.0
    #: facial soft-tissue T1w brightness per mm of t_i (percent, at the nose tip; a fattier,
    #: thicker face is brighter), faded out like the stretch (:func:`face_weight`). At 5 %/mm
    #: the bias field and the warps drowned it: a leave-one-out ridge regression of t_i on 24
    #: demo face crops (6 mm) gave rho 0.19; 10 %/mm gave 0.47 and 20 %/mm 0.85.
    face_intensity_pct_per_mm: float = 20.0

    @classmethod
    def from_config(cls, demo: dict) -> SynthParams:
        """Build from the validated ``demo`` section of the config (same key names)."""
        fields = {k: demo[k] for k in cls.__dataclass_fields__ if k in demo}
        for key in ("fov_mm", "fov_offset_mm"):
            if key in fields:
                fields[key] = tuple(float(v) for v in fields[key])
        return cls(**fields)


def synth_config(demo: dict) -> dict:
    """The keys of the config's ``demo`` section that shape the images (Snakemake params).

    Only these rerun the subject jobs when changed; cohort sizes or the cache folder do not.
    """
    return {k: demo[k] for k in SynthParams.__dataclass_fields__ if k in demo}


@dataclass(frozen=True)
class BaseAnatomy:
    """Landmarks of a base head in world mm (RAS), from its brain and head masks."""

    brain_centroid: np.ndarray  # (3,)
    brain_front_y: float  # most anterior brain voxel
    nose_y: float  # most anterior head voxel below the brain centroid

    @classmethod
    def measure(cls, affine: np.ndarray, brain: np.ndarray, head: np.ndarray) -> BaseAnatomy:
        brain_xyz = nib.affines.apply_affine(affine, np.argwhere(brain))
        centroid = brain_xyz.mean(axis=0)
        head_xyz = nib.affines.apply_affine(affine, np.argwhere(head))
        lower = head_xyz[head_xyz[:, 2] < centroid[2]]
        return cls(centroid, float(brain_xyz[:, 1].max()), float(lower[:, 1].max()))


def output_grid(
    anatomy: BaseAnatomy, params: SynthParams
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the subject grid, centred near the base head."""
    v = params.voxel_size_mm
    shape = tuple(int(round(f / v)) for f in params.fov_mm)
    centre = anatomy.brain_centroid + np.asarray(params.fov_offset_mm)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = centre - v * (np.asarray(shape) - 1) / 2.0
    return shape, affine


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng, centre, size_mm, spacing_mm, smooth_mm, n_components):
    """Unit-variance smooth random field on a control grid over a box of ``size_mm`` at ``centre``.

    Returns (values [C, *grid], origin (3,) mm, spacing mm). The control grid depends on the
    field of view only, so a seed gives the same field at any output voxel size.
    """
    shape = np.ceil(np.asarray(size_mm) / spacing_mm).astype(int) + 3
    noise = rng.standard_normal((n_components, *shape))
    sigma = smooth_mm / spacing_mm
    field = np.stack([ndi.gaussian_filter(c, sigma, mode="wrap") for c in noise])
    field /= field.std(axis=tuple(range(1, field.ndim)), keepdims=True)
    origin = np.asarray(centre) - spacing_mm * (shape - 1) / 2.0
    return field, origin, spacing_mm


def _sample_field(field, origin, spacing, points):
    coords = ((points - origin) / spacing).T
    return np.stack([ndi.map_coordinates(c, coords, order=1, mode="nearest") for c in field], 1)


def backward_map(points, subject: DemoSubject, anatomy: BaseAnatomy, params: SynthParams, rng):
    """Base-space points (N, 3) mm sampled by subject-space points (N, 3) mm."""
    centre = anatomy.brain_centroid + np.asarray(params.fov_offset_mm)
    # 1. smooth deformation, RMS displacement deformation_rms_mm
    smooth = params.deformation_smoothness_mm
    field, origin, spacing = _smooth_field(rng, centre, params.fov_mm, 4.0, smooth, 3)
    q = points + _sample_field(field, origin, spacing, points) * (
        params.deformation_rms_mm / np.sqrt(3.0)
    )
    # 2. inverse of the forward affine p = c + R S (q - c) + tau
    sex_scale = 1.0 + params.sex_head_scale_pct / 100.0 * (1.0 if subject.sex == "M" else -1.0)
    scales = sex_scale * (1.0 + rng.uniform(-1, 1, 3) * params.scale_pct / 100.0)
    rotation = _rotation(np.deg2rad(rng.uniform(-1, 1, 3) * params.rotation_deg))
    shift = rng.uniform(-1, 1, 3) * params.translation_mm
    c = anatomy.brain_centroid
    q = c + ((q - c - shift) @ rotation) / scales
    # 3. ventricles: radial expansion of up to ventricle_expansion_mm at 80 years (shrink at 20)
    sigma = 12.0
    age_factor = (subject.age - 50.0) / 30.0
    alpha = params.ventricle_expansion_mm * age_factor / (sigma * np.exp(-0.5))
    r = q - c
    q = q - alpha * r * np.exp(-(r**2).sum(axis=1, keepdims=True) / (2 * sigma**2))
    # 4. face: soft tissue of the lower face thicker by t_i mm at the nose tip
    q[:, 1] -= subject.face_tissue_mm * face_weight(q, anatomy)
    return q


def face_weight(points, anatomy: BaseAnatomy) -> np.ndarray:
    """Weight in [0, 1] of the facial stretch at base-space points (N, 3) mm.

    0 behind the frontal pole (so the brain never moves), rising linearly to 1 at the nose tip, and
    faded out (cosine over 15 mm) above a plane 20 mm below the brain centroid: nose, cheeks,
    lips and chin, the tissue that defacers remove.
    """
    y0 = anatomy.brain_front_y
    ramp = np.clip((points[:, 1] - y0) / (anatomy.nose_y - y0), 0.0, 1.0)
    z_full, z_none = anatomy.brain_centroid[2] - 35.0, anatomy.brain_centroid[2] - 20.0
    t = np.clip((points[:, 2] - z_full) / (z_none - z_full), 0.0, 1.0)
    return ramp * 0.5 * (1.0 + np.cos(np.pi * t))


@dataclass(frozen=True)
class SessionParams:
    """What a later session of a subject (an independent acquisition: the re-identification
    gallery) changes: its own pose (``SynthParams.rotation_deg`` and ``translation_mm`` again,
    about the brain centroid), its own smooth deformation of ``deformation_rms_mm`` (posture,
    swallowing, soft tissue: small next to the subject's own), bias field, gain and noise."""

    deformation_rms_mm: float = 1.0

    @classmethod
    def from_config(cls, gallery: dict) -> SessionParams:
        """From the validated ``demo.gallery`` section of the config (same key names)."""
        return cls(**{k: gallery[k] for k in cls.__dataclass_fields__ if k in gallery})


def session_map(
    points: np.ndarray,
    anatomy: BaseAnatomy,
    params: SynthParams,
    session: SessionParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Points ``[N, 3]`` (mm) of a later session's scanner space -> the first session's.

    A smooth deformation of RMS ``session.deformation_rms_mm``, then a rigid move about the
    brain centroid of up to ``params.rotation_deg`` and ``params.translation_mm`` per axis: the
    subject's anatomy (base, scale, its own deformation, face) is the first session's.
    """
    centre = anatomy.brain_centroid + np.asarray(params.fov_offset_mm)
    field, origin, spacing = _smooth_field(
        rng, centre, params.fov_mm, 4.0, params.deformation_smoothness_mm, 3
    )
    p = points + _sample_field(field, origin, spacing, points) * (
        session.deformation_rms_mm / np.sqrt(3.0)
    )
    rotation = _rotation(np.deg2rad(rng.uniform(-1, 1, 3) * params.rotation_deg))
    shift = rng.uniform(-1, 1, 3) * params.translation_mm
    c = anatomy.brain_centroid
    return c + (p - c) @ rotation.T + shift


def synthesize_subject(
    base: nib.Nifti1Image,
    base_brain: np.ndarray,
    base_head: np.ndarray,
    subject: DemoSubject,
    params: SynthParams,
    session: int = 1,
    session_params: SessionParams | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic subject from a RAS base head.

    Args:
        base: base T1w, RAS, 3-D.
        base_brain, base_head: bool masks on the base grid.
        session: 1 is the subject's image of the cohort; a later session is an independent
            acquisition of the same anatomy (:func:`session_map`, with ``session_params``) with
            its own bias field, gain and noise, drawn from its own stream
            (``SeedSequence(seed, spawn_key=(0, session))``); session 1 is unchanged by it.
    Returns:
        t1w [X, Y, Z] float32 (arbitrary units of the base), brain mask [X, Y, Z] uint8, and the
        4x4 RAS affine (mm) of the subject grid.
    """
    if session < 1:
        raise ValueError(f"session must be 1 or more, got {session}")
    rng = np.random.default_rng(np.random.SeedSequence(subject.seed, spawn_key=(0,)))
    anatomy = BaseAnatomy.measure(base.affine, base_brain, base_head)
    shape, affine = output_grid(anatomy, params)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    points = nib.affines.apply_affine(affine, ijk)
    scanner = points
    if session > 1:
        session_rng = np.random.default_rng(
            np.random.SeedSequence(subject.seed, spawn_key=(0, session))
        )
        scanner = session_map(
            points, anatomy, params, session_params or SessionParams(), session_rng
        )
    # the subject's anatomy: the same draws, in the same order, in every session
    q = backward_map(scanner, subject, anatomy, params, rng)
    if session > 1:
        rng = session_rng  # bias field, gain and noise of this acquisition
    base_ijk = nib.affines.apply_affine(np.linalg.inv(base.affine), q).T

    data = _antialias(np.asarray(base.dataobj, dtype=np.float32), base, params.voxel_size_mm)
    t1w = ndi.map_coordinates(data, base_ijk, order=1, mode="constant", cval=0.0)
    # facial soft tissue: brighter (fattier) with t_i, where the face is stretched
    t1w *= np.clip(
        1.0
        + params.face_intensity_pct_per_mm
        / 100.0
        * subject.face_tissue_mm
        * face_weight(q, anatomy),
        0.2,
        None,
    )
    brain = ndi.map_coordinates(base_brain.astype(np.float32), base_ijk, order=1) > 0.5

    centre = anatomy.brain_centroid + np.asarray(params.fov_offset_mm)
    bias, origin, spacing = _smooth_field(rng, centre, params.fov_mm, 16.0, 48.0, 1)
    gain = rng.uniform(0.9, 1.1)
    t1w = (
        t1w
        * gain
        * np.exp(_sample_field(bias, origin, spacing, points)[:, 0] * params.bias_field_pct / 100)
    )
    sigma_noise = params.noise_pct / 100.0 * np.percentile(t1w[t1w > 0], 99)
    real = t1w + rng.normal(0.0, sigma_noise, t1w.shape)
    imag = rng.normal(0.0, sigma_noise, t1w.shape)
    t1w = np.sqrt(real**2 + imag**2)  # Rician magnitude noise, as in real magnitude images
    return (
        t1w.reshape(shape).astype(np.float32),
        brain.reshape(shape).astype(np.uint8),
        affine,
    )


#: faces of the grid, as axis and end, in RAS
_GRID_FACES = {
    "left": (0, 0),
    "right": (0, -1),
    "posterior": (1, 0),
    "anterior": (1, -1),
    "inferior": (2, 0),
    "superior": (2, -1),
}


def tissue_on_grid_faces(t1w: np.ndarray, fraction: float = 0.2) -> dict[str, int]:
    """Voxels brighter than ``fraction`` of the 99th percentile on each face of the grid
    ``[X, Y, Z]`` (RAS): head tissue the field of view cut off (the neck's inferior face is
    expected; the noise floor lies far below the threshold)."""
    threshold = fraction * float(np.percentile(t1w, 99))
    counts = {}
    for name, (axis, end) in _GRID_FACES.items():
        plane = np.take(t1w, end, axis=axis)
        counts[name] = int(np.count_nonzero(plane > threshold))
    return counts


def _antialias(data: np.ndarray, img: nib.Nifti1Image, voxel_size_mm: float) -> np.ndarray:
    """Gaussian pre-filter so that downsampling to ``voxel_size_mm`` does not alias.

    The kernel's FWHM is sqrt(v_out^2 - v_in^2) per axis (none when upsampling).
    """
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    fwhm = np.sqrt(np.clip(voxel_size_mm**2 - zooms**2, 0.0, None))
    sigma_vox = fwhm / FWHM_PER_SIGMA / zooms
    return ndi.gaussian_filter(data, sigma_vox) if np.any(sigma_vox > 0.1) else data
