r"""The convolutional ResNet encoder and decoder of Dai & Wipf (2019), sized by image shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from pyro_vaeflow.nets.precision import MixedPrecision

__all__ = ["ResNetDecoder", "ResNetEncoder", "ResNetSizes", "ResidualBlock", "default_architecture"]


def default_architecture(image_shape: Sequence[int]) -> dict:
    """Sensible network sizes for the usual image sizes (28×28, 32×32, 64×64).

    The ResNet depth halves the image down to 7×7 or 4×4, as Dai & Wipf's; 1-channel images get
    one squeeze in a Glow layer so that its couplings have channels to split.

    Example:
        >>> default_architecture((1, 28, 28))
        {'latent_dim': 32, 'depth': 2, 'glow_squeeze': 1}
    """
    channels, height, width = image_shape
    side = min(height, width)
    return {
        "latent_dim": 32 if side < 32 else 64,
        "depth": 2 if side < 32 else 3 if side < 64 else 4,
        "glow_squeeze": 1 if channels == 1 else 0,
    }


@dataclass(frozen=True)
class ResNetSizes:
    """The sizes shared by a model's :class:`ResNetEncoder` and :class:`ResNetDecoder`.

    Attributes:
        image_shape: ``(C, H, W)``.
        depth: the number of scales (``None``: :func:`default_architecture`'s for the image).
        base_channels: channels at full resolution.
        blocks_per_scale: residual blocks at each scale.
        fc_dim: width of the fully connected layer.

    Example:
        >>> sizes = ResNetSizes((1, 28, 28), base_channels=4, fc_dim=8)
        >>> sizes.depth, sizes.decoder(latent_dim=2, out_channels=1)(torch.zeros(3, 2)).shape
        (2, torch.Size([3, 1, 28, 28]))
    """

    image_shape: tuple[int, int, int]
    depth: int | None = None
    base_channels: int = 32
    blocks_per_scale: int = 1
    fc_dim: int = 512

    def __post_init__(self) -> None:
        if self.depth is None:
            object.__setattr__(self, "depth", default_architecture(self.image_shape)["depth"])

    def _sizes(self) -> dict:
        return {
            "depth": self.depth,
            "base_channels": self.base_channels,
            "blocks_per_scale": self.blocks_per_scale,
            "fc_dim": self.fc_dim,
        }

    def encoder(self, latent_dim: int) -> ResNetEncoder:
        """A :class:`ResNetEncoder` of these sizes."""
        return ResNetEncoder(self.image_shape, latent_dim, **self._sizes())

    def decoder(self, latent_dim: int, out_channels: int) -> ResNetDecoder:
        """A :class:`ResNetDecoder` of these sizes."""
        return ResNetDecoder(self.image_shape, latent_dim, out_channels, **self._sizes())


class ResidualBlock(nn.Module):
    r"""Two 3x3 convolutions with a skip connection: :math:`h + \mathrm{conv}(\mathrm{relu}(
    \mathrm{conv}(\mathrm{relu}(h))))`.

    Args:
        channels: input and output channels.

    Example:
        >>> ResidualBlock(8)(torch.zeros(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def _check_depth(image_shape: Sequence[int], depth: int) -> tuple[int, int, int]:
    channels, height, width = image_shape
    if depth < 0 or height % 2**depth or width % 2**depth:
        raise ValueError(
            f"a ResNet of depth {depth} halves the image {depth} times, so H and W must be "
            f"divisible by {2**depth}; got image shape {tuple(image_shape)}"
        )
    return channels, height // 2**depth, width // 2**depth


class ResNetEncoder(nn.Module, MixedPrecision):
    r"""Images ``[..., C, H, W]`` → the mean and standard deviation of a diagonal Gaussian.

    A 3x3 convolution to ``base_channels``, then ``depth`` scales of (residual blocks, a
    stride-2 convolution that doubles the channels), a fully connected layer of width
    ``fc_dim``, and a linear map to :math:`(\mu, \rho)` with :math:`\sigma = \mathrm{softplus}
    (\rho) + 10^{-4}`. With ``compute_dtype`` set (:class:`~pyro_vaeflow.nets.precision.
    MixedPrecision`) the layers run in that precision and :math:`\mu, \sigma` are computed in
    float32 from their output.

    Args:
        image_shape: ``(C, H, W)``; H and W must be divisible by :math:`2^{\text{depth}}`.
        latent_dim: the size of :math:`z`.
        depth: the number of scales (3 for CIFAR-10 and 4 for CelebA in the paper).
        base_channels: channels at full resolution.
        blocks_per_scale: residual blocks at each scale.
        fc_dim: width of the fully connected layer.

    Example:
        >>> encoder = ResNetEncoder((1, 28, 28), latent_dim=8, depth=2, base_channels=4)
        >>> loc, scale = encoder(torch.rand(5, 1, 28, 28))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 8]), True)
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int,
        depth: int = 2,
        base_channels: int = 32,
        blocks_per_scale: int = 1,
        fc_dim: int = 512,
    ) -> None:
        super().__init__()
        channels, height, width = _check_depth(image_shape, depth)
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = [nn.Conv2d(channels, base_channels, 3, padding=1)]
        width_ = base_channels
        for _ in range(depth):
            layers += [ResidualBlock(width_) for _ in range(blocks_per_scale)]
            layers += [nn.Conv2d(width_, 2 * width_, 4, stride=2, padding=1)]
            width_ *= 2
        layers += [ResidualBlock(width_) for _ in range(blocks_per_scale)]
        layers += [
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width_ * height * width, fc_dim),
            nn.ReLU(),
            nn.Linear(fc_dim, 2 * latent_dim),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch = x.shape[:-3]
        with self.autocast(x):
            out = self.net(x.reshape(-1, *x.shape[-3:]))
        out = out.to(x.dtype).reshape(*batch, -1)
        loc, pre_scale = out.chunk(2, dim=-1)
        return loc, nn.functional.softplus(pre_scale) + 1e-4


class ResNetDecoder(nn.Module, MixedPrecision):
    r"""Latents ``[..., d]`` → images ``[..., out_channels, H, W]``, the mirror of the encoder.

    A linear map to a fully connected layer and then to the coarsest feature map,
    ``depth`` scales of (a stride-2 transposed convolution that halves the channels, residual
    blocks), and a 3x3 convolution to ``out_channels``. The output is unconstrained, and in the
    input's dtype even when ``compute_dtype`` runs the layers in bf16
    (:class:`~pyro_vaeflow.nets.precision.MixedPrecision`).

    Args:
        image_shape: ``(C, H, W)`` of the images.
        latent_dim: the size of :math:`z`.
        out_channels: output channels (e.g. :math:`2C` for a mean and a per-pixel scale).
        depth: the number of scales.
        base_channels: channels at full resolution.
        blocks_per_scale: residual blocks at each scale.
        fc_dim: width of the fully connected layer.

    Example:
        >>> decoder = ResNetDecoder((1, 28, 28), 8, out_channels=2, depth=2, base_channels=4)
        >>> decoder(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 2, 28, 28])
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int,
        out_channels: int,
        depth: int = 2,
        base_channels: int = 32,
        blocks_per_scale: int = 1,
        fc_dim: int = 512,
    ) -> None:
        super().__init__()
        _, height, width = _check_depth(image_shape, depth)
        self.image_shape = tuple(image_shape)
        width_ = base_channels * 2**depth
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, fc_dim),
            nn.ReLU(),
            nn.Linear(fc_dim, width_ * height * width),
            nn.Unflatten(1, (width_, height, width)),
        ]
        for _ in range(depth):
            layers += [ResidualBlock(width_) for _ in range(blocks_per_scale)]
            layers += [nn.ReLU(), nn.ConvTranspose2d(width_, width_ // 2, 4, stride=2, padding=1)]
            width_ //= 2
        layers += [ResidualBlock(width_) for _ in range(blocks_per_scale)]
        layers += [nn.ReLU(), nn.Conv2d(width_, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        with self.autocast(z):
            out = self.net(z.reshape(-1, z.shape[-1]))
        return out.to(z.dtype).reshape(*z.shape[:-1], *out.shape[-3:])
