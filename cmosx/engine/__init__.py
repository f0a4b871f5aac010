"""Inference engine: tiling with overlap blending, device and precision policy, the blind-SR pipeline."""
