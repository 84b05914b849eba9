"""Networks: the paper-style U-Net, its building blocks and published presets."""

from unet_monai.networks.blocks import ConvNormAct, DoubleConv, Down, MaxPool, Up, center_crop_to
from unet_monai.networks.presets import blog_unet_2d, cicek_unet_3d, paper_unet_2d
from unet_monai.networks.unet import PaperUNet

__all__ = [
    "PaperUNet",
    "ConvNormAct",
    "DoubleConv",
    "MaxPool",
    "Down",
    "Up",
    "center_crop_to",
    "paper_unet_2d",
    "cicek_unet_3d",
    "blog_unet_2d",
]
