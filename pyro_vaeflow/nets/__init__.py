"""Networks: the ResNet encoder and decoder of the VAEs, their default sizes, and PixelCNN."""

from pyro_vaeflow.nets.pixelcnn import MaskedConv2d, PixelCNN
from pyro_vaeflow.nets.resnet import (
    ResidualBlock,
    ResNetDecoder,
    ResNetEncoder,
    ResNetSizes,
    default_architecture,
)

__all__ = [
    "MaskedConv2d",
    "PixelCNN",
    "ResNetDecoder",
    "ResNetEncoder",
    "ResNetSizes",
    "ResidualBlock",
    "default_architecture",
]
