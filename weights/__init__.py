"""Bundled model weights (installed as ``cmosx._weights``): safetensors, model cards, manifest."""
