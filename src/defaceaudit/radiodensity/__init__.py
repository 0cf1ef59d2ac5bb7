"""Muscle radiodensity from facial voxels: what defacing removes (paper section 3, Figure 6).

Kept apart: face crops in template space (:mod:`.crop`), age- and sex-adjusted targets and
subject splits (:mod:`.targets`), subject-balanced sampling (:mod:`.sampler`), the ResNet10
factory and MedicalNet loading (:mod:`.model`), the training loop (:mod:`.train`), Spearman
correlations with paired bootstrap replicates (:mod:`.evaluate`) and the figure
(:mod:`.figure`); what the workflow runs (:mod:`.plan`, read at DAG time, and :mod:`.study`).

The package imports nothing itself, so that building the DAG never loads torch or statsmodels;
import the modules.
"""

#: the image type of the untouched, prepared T1w (the reference of every comparison)
ORIGINAL = "original"
