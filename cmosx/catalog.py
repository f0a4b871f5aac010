"""The BSR datasets cmosx knows: their names and the defocus kernel size each is rendered with.

Kernel 21 bounds the Gaussian sigma at 5 HR pixels, kernel 61 at 15 (paper section 4.1: Cityscapes' wide
street scenes take the larger kernel). Pure Python, no torch: the CLI reads it to build its choices.
"""

from __future__ import annotations

# name -> defocus kernel size (odd, HR pixels)
DATASET_KERNEL: dict[str, int] = {"synthetic-bsr": 21, "photo-bsr": 21, "nyuv2-bsr": 21, "cityscapes-bsr": 61}
DATASET_NAMES: tuple[str, ...] = tuple(DATASET_KERNEL)


def sigma_max_for(kernel_size: int) -> float:
    """Largest Gaussian sigma (HR px) for a kernel size: ``(kernel_size - 1) / 4`` (5 for 21, 15 for 61)."""
    return (kernel_size - 1) / 4.0


def dataset_sigma_max(name: str) -> float:
    """Largest blur sigma (HR px) of a dataset rendered with its default kernel."""
    return sigma_max_for(DATASET_KERNEL[name])


# What hardware each training preset (cmosx.train.config.PRESETS) is sized for; the CLI's help shows it.
PRESET_HARDWARE = {
    "cpu": "a CPU of 2+ cores (1 torch thread, batch 8 of 192 x 192 HR crops; add --workers 1)",
    "paper": "one large GPU (estimator 8 whole 480 x 640 images a batch, sr 16 crops of 192, blind 4 whole images;"
    " pass --device cuda)",
}
