"""Networks: the ResNet encoder and decoder of the VAEs, their default sizes, PixelCNN, and the
mixed-precision mixin."""

from pyro_vaeflow.nets.pixelcnn import MaskedConv2d, PixelCNN
from pyro_vaeflow.nets.precision import MixedPrecision
from pyro_vaeflow.nets.resnet import (
    ResidualBlock,
    ResNetDecoder,
    ResNetEncoder,
    ResNetSizes,
    default_architecture,
)

__all__ = [
    "MaskedConv2d",
    "MixedPrecision",
    "PixelCNN",
    "ResNetDecoder",
    "ResNetEncoder",
    "ResNetSizes",
    "ResidualBlock",
    "default_architecture",
]
