"""BSR datasets: defocus renderer, synthetic scenes, NYUv2-BSR and Cityscapes-BSR, on-disk format."""
