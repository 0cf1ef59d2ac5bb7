"""Face similarity metrics: surface distance (MASD) and SSIM / PSNR, paper section 2.3."""
