"""unet_monai: the paper-style U-Net (Ronneberger et al. 2015, Cicek et al. 2016) for MONAI pipelines."""

from unet_monai.networks import PaperUNet

__version__ = "0.1.0"
__all__ = ["PaperUNet", "__version__"]
