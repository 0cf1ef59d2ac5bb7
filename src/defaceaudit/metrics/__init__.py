"""Face similarity metrics: surface distance (MASD) and SSIM / PSNR, paper section 2.3."""

#: image types of one table row, in the paper's column order
IMAGE_TYPES = ("defaced", "population_average", "dpm_refaced")
