"""Data sets that ship with the package (generated, never downloaded)."""

from unet_monai.data.synthetic import make_synthetic_em, synthetic_em_volume

__all__ = ["make_synthetic_em", "synthetic_em_volume"]
