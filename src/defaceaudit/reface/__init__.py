"""Cascaded diffusion models for refacing defaced MRI (paper section 2.1).

Kept apart, so that each is tested and replaced on its own: the noise process
(:mod:`.schedule`: schedule, ``q_sample``, x0 loss), the DDIM sampler (:mod:`.ddim`, eq. 12 of
Song et al. 2021 with x0 prediction), the network factory (:mod:`.unet`, one code path for the
3-D and the 2.5-D stage), the 2.5-D slab tiling (:mod:`.slabs`) and the cascade wiring
(:mod:`.cascade`).

The package imports nothing itself, so that the workflow (which reads :mod:`.sizing` at DAG
time, through :mod:`defaceaudit.workflow.reface_jobs`) never loads torch; import the modules.

Tensors are [B, C, X, Y, Z] (Z axial), intensities in [-1, 1], timesteps [B] long.
"""
