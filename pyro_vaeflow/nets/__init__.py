"""Networks: the encoder and decoder of the VAE."""

from pyro_vaeflow.nets.resnet import ResidualBlock, ResNetDecoder, ResNetEncoder

__all__ = ["ResNetDecoder", "ResNetEncoder", "ResidualBlock"]
