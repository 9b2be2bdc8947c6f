"""Networks: the encoder and decoder of the VAE."""

from pyro_vaeflow.nets.pixelcnn import MaskedConv2d, PixelCNN
from pyro_vaeflow.nets.resnet import ResidualBlock, ResNetDecoder, ResNetEncoder

__all__ = ["MaskedConv2d", "PixelCNN", "ResNetDecoder", "ResNetEncoder", "ResidualBlock"]
