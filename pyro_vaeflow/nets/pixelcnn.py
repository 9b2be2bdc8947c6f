r"""Masked convolutions and a small conditional PixelCNN (van den Oord et al., 2016).

Pixels are ordered in raster-scan order (row by row, left to right) and, within a pixel, channel
by channel (R → G → B for RGB: channel 0 first). Write :math:`(i, c)` for channel :math:`c` of
pixel :math:`i`. A PixelCNN's output for :math:`(i, c)` depends only on the inputs that come
before it, :math:`\{(j, c') : j < i\} \cup \{(i, c') : c' < c\}`, so
:math:`p(x) = \prod_{i, c} p(x_{i, c} \mid x_{<(i, c)})` is a valid autoregressive model.

Channel groups. With :math:`C` image channels, the ``n`` channels of every layer are split into
:math:`C` contiguous groups of ``n / C`` (channel ``j`` is in group ``j * C // n``); group
:math:`c` of a feature map carries information about colour :math:`c`. At the centre pixel a
mask ``"A"`` connects input group :math:`c'` to output group :math:`c` only when
:math:`c' < c`, and a mask ``"B"`` when :math:`c' \le c`; all pixels before the centre are
connected, all after it are not. The first layer (on the image) uses ``"A"``, every later one
``"B"``, and the output's group :math:`c` holds the parameters of colour :math:`c`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyro_vaeflow.validation import check_int

__all__ = ["MaskedConv2d", "PixelCNN", "channel_groups", "pixelcnn_mask"]

_MASK_TYPES = ("A", "B")


def _pair(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    try:
        odd = len(size) == 2 and all(check_int("kernel_size", k) % 2 == 1 for k in size)
    except ValueError:
        odd = False
    if not odd:
        raise ValueError(f"kernel_size must be odd and >= 1 (or a pair of them), got {kernel_size}")
    return size


def channel_groups(channels: int, image_channels: int) -> Tensor:
    """The colour group of each of ``channels`` channels: contiguous blocks, ``j * C // n``.

    Example:
        >>> channel_groups(6, 3).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    if image_channels < 1 or channels < image_channels or channels % image_channels:
        raise ValueError(
            f"the channels ({channels}) must be a positive multiple of the image channels "
            f"({image_channels}), so that every colour gets a group of its own"
        )
    return torch.arange(channels) * image_channels // channels


def pixelcnn_mask(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    mask_type: str,
    image_channels: int = 1,
) -> Tensor:
    r"""The ``[out, in, kh, kw]`` 0/1 mask of a masked convolution.

    Spatially, rows below the centre and the centre row's pixels right of the centre are cut;
    at the centre, input group :math:`c'` reaches output group :math:`c` iff :math:`c' < c`
    (``"A"``) or :math:`c' \le c` (``"B"``).

    Example:
        >>> pixelcnn_mask(1, 1, 3, "A")[0, 0]
        tensor([[1., 1., 1.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """
    if mask_type not in _MASK_TYPES:
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = _pair(kernel_size)
    groups_in = channel_groups(in_channels, image_channels)
    groups_out = channel_groups(out_channels, image_channels)
    mask = torch.ones(out_channels, in_channels, kh, kw)
    mask[:, :, kh // 2 + 1 :, :] = 0.0
    mask[:, :, kh // 2, kw // 2 + 1 :] = 0.0
    if mask_type == "A":
        centre = groups_in[None, :] < groups_out[:, None]
    else:
        centre = groups_in[None, :] <= groups_out[:, None]
    mask[:, :, kh // 2, kw // 2] = centre.to(mask.dtype)
    return mask


class MaskedConv2d(nn.Conv2d):
    r"""A 'same'-padded convolution whose kernel is masked to keep the raster/colour order.

    See the module's docstring for the ordering: with mask ``"A"`` the output at :math:`(i, c)`
    sees the input at positions strictly before :math:`(i, c)`; with ``"B"`` also at
    :math:`(i, c')` for :math:`c' \le c` (so a stack A, B, B, … stays autoregressive).

    Args:
        in_channels: input channels, a multiple of ``image_channels``.
        out_channels: output channels, a multiple of ``image_channels``.
        kernel_size: an odd size, or a pair ``(kh, kw)`` of odd sizes.
        mask_type: ``"A"`` (first layer) or ``"B"`` (later layers).
        image_channels: the colours :math:`C` of the image (1: no channel masking).
        bias: add a learned bias.

    Example:
        >>> conv = MaskedConv2d(3, 12, 3, "A", image_channels=3)
        >>> conv(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 12, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        mask_type: str = "B",
        image_channels: int = 1,
        bias: bool = True,
    ) -> None:
        kh, kw = _pair(kernel_size)
        mask = pixelcnn_mask(in_channels, out_channels, (kh, kw), mask_type, image_channels)
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.mask_type = mask_type
        self.image_channels = image_channels
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"


class PixelCNN(nn.Module):
    r"""A small conditional PixelCNN: images ``[..., C, H, W]`` → parameters ``[..., C, P, H, W]``.

    .. math::
        h_0 = \mathrm{conv}^A_{k}(x) + W_0 s, \qquad
        h_{l} = h_{l-1} + \mathrm{conv}^B_{1}\Big(\mathrm{elu}\big(\mathrm{conv}^B_{k}
        (\mathrm{elu}(h_{l-1})) + W_l s\big)\Big), \qquad
        \theta = \mathrm{conv}^B_{1}(\mathrm{elu}(h_{L-1})),

    for :math:`l = 1, \dots, L - 1`, where :math:`s` is the conditioning feature map (no masking:
    it does not depend on :math:`x`) and :math:`W_l` are 1x1 convolutions. :math:`\theta` holds
    ``params`` numbers per colour and pixel: ``output[..., c, :, i, j]`` parametrises
    :math:`p(x_{c, i, j} \mid x_{<(i, j, c)}, s)`.

    Window. With ``num_layers`` masked :math:`k \times k` layers the conditional of pixel
    :math:`(i, j)` sees only pixels :math:`(i', j')` before it with
    :math:`i - r \le i'` and :math:`|j' - j| \le r`, :math:`r = L (k - 1) / 2` (:attr:`window`):
    at most :math:`r` rows above and :math:`r` columns to either side, less the PixelCNN's blind
    spot. VLAE's decoder is :math:`L = 6`, :math:`k = 3` (:math:`r = 6`); fewer or smaller
    layers make the window, and so what the decoder can model without :math:`z`, smaller.

    Args:
        image_channels: the colours :math:`C`.
        params: parameters per colour and pixel :math:`P` (1 for a Bernoulli logit, 2 for a
            logistic's location and scale).
        hidden_channels: width of the residual stream, a multiple of :math:`C`.
        num_layers: masked :math:`k \times k` convolutions :math:`L` (one A, then B ones).
        kernel_size: the odd size :math:`k` of the masked convolutions.
        cond_channels: channels of the conditioning map :math:`s` (0: unconditional).

    Example:
        >>> net = PixelCNN(1, 2, hidden_channels=8, num_layers=3, cond_channels=4)
        >>> net(torch.rand(5, 1, 28, 28), torch.randn(5, 4, 28, 28)).shape, net.window
        (torch.Size([5, 1, 2, 28, 28]), 3)
    """

    def __init__(
        self,
        image_channels: int,
        params: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        kernel_size: int = 3,
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("image_channels", image_channels, 1),
            ("params", params, 1),
            ("num_layers", num_layers, 1),
            ("cond_channels", cond_channels, 0),
        ):
            check_int(name, value, low)
        check_int("kernel_size", kernel_size)
        _pair(kernel_size)
        channel_groups(hidden_channels, image_channels)
        self.image_channels, self.params = image_channels, params
        self.num_layers, self.kernel_size = num_layers, kernel_size
        self.cond_channels = cond_channels
        c, h = image_channels, hidden_channels
        self.input = MaskedConv2d(c, h, kernel_size, "A", c)
        self.convs = nn.ModuleList(
            MaskedConv2d(h, h, kernel_size, "B", c) for _ in range(num_layers - 1)
        )
        self.mixes = nn.ModuleList(MaskedConv2d(h, h, 1, "B", c) for _ in range(num_layers - 1))
        self.conditions = (
            nn.ModuleList(nn.Conv2d(cond_channels, h, 1) for _ in range(num_layers))
            if cond_channels
            else None
        )
        self.output = MaskedConv2d(h, c * params, 1, "B", c)

    @property
    def window(self) -> int:
        r"""The window radius :math:`r = L (k - 1) / 2`, in pixels."""
        return self.num_layers * (self.kernel_size - 1) // 2

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Parameters ``[..., C, P, H, W]``; the leading dims of ``x`` and ``cond`` broadcast."""
        if x.dim() < 4 or x.shape[-3] != self.image_channels:
            raise ValueError(
                f"expected images [..., {self.image_channels}, H, W], got {tuple(x.shape)}"
            )
        if (cond is None) != (self.conditions is None):
            raise ValueError(
                "this PixelCNN needs a conditioning map"
                if cond is None
                else "this PixelCNN is unconditional (cond_channels=0) but got a map"
            )
        batch = x.shape[:-3]
        if cond is not None:
            if cond.dim() < 4 or cond.shape[-3:] != (self.cond_channels, *x.shape[-2:]):
                raise ValueError(
                    f"expected a conditioning map [..., {self.cond_channels}, "
                    f"{x.shape[-2]}, {x.shape[-1]}], got {tuple(cond.shape)}"
                )
            batch = torch.broadcast_shapes(batch, cond.shape[:-3])
            cond = cond.expand(*batch, *cond.shape[-3:]).reshape(-1, *cond.shape[-3:])
        x = x.expand(*batch, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        h = self.input(x)
        if cond is not None:
            h = h + self.conditions[0](cond)
        for index, (conv, mix) in enumerate(zip(self.convs, self.mixes, strict=True)):
            r = conv(F.elu(h))
            if cond is not None:
                r = r + self.conditions[index + 1](cond)
            h = h + mix(F.elu(r))
        out = self.output(F.elu(h))
        return out.reshape(*batch, self.image_channels, self.params, *x.shape[-2:])

    @torch.no_grad()
    def sample(
        self,
        draw: Callable[[Tensor, tuple[int, int, int]], Tensor],
        shape: Sequence[int],
        cond: Tensor | None = None,
        progress: bool = True,
        desc: str = "PixelCNN sampling",
    ) -> Tensor:
        r"""Fills an ``N×C×H×W`` network input pixel by pixel, colour by colour, in raster order.

        At each step :math:`(i, j, c)` the network runs only on the patch of rows
        :math:`[i - r, i]` and columns :math:`[j - r, j + r]` (:attr:`window` :math:`r`,
        clipped to the image): the zero padding at the patch's edges spoils at most :math:`r`
        rows and columns inwards after the :math:`L` layers, so the output at :math:`(i, j)` is
        exactly that of the whole image, at a cost that does not grow with the image. Then
        ``draw(params[N, P], (c, i, j))`` returns the ``N`` new input values of colour ``c`` at
        pixel ``(i, j)``. The loop is sequential: :math:`C H W` network passes, shown by a tqdm
        bar.

        Args:
            draw: the parameters of :math:`p(x_{c, i, j} \mid \cdot)` and the index
                ``(c, i, j)`` → the sampled values, in the units the network takes as input.
            shape: ``(N, C, H, W)``.
            cond: the conditioning map ``[N, cond_channels, H, W]`` (or ``None``).
            progress: show the bar.
            desc: the bar's label.

        Returns:
            The filled input ``[N, C, H, W]``.
        """
        n, c, height, width = (int(s) for s in shape)
        reference = self.output.weight
        x = torch.zeros(n, c, height, width, dtype=reference.dtype, device=reference.device)
        r = self.window
        with tqdm(total=c * height * width, desc=desc, disable=not progress, leave=False) as bar:
            for i in range(height):
                top = max(0, i - r)
                for j in range(width):
                    left, right = max(0, j - r), min(width, j + r + 1)
                    patch = cond if cond is None else cond[..., top : i + 1, left:right]
                    for colour in range(c):
                        params = self(x[..., top : i + 1, left:right], patch)
                        value = draw(params[:, colour, :, -1, j - left], (colour, i, j))
                        x[:, colour, i, j] = value
                        bar.update(1)
        return x
