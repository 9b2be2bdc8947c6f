"""Masked convolutions and the PixelCNN: autoregressive by gradients, windowed, shaped, sampled."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from pyro_vaeflow.nets import MaskedConv2d, PixelCNN
from pyro_vaeflow.nets.pixelcnn import channel_groups, pixelcnn_mask

SIDE = 5


def _dependence(fn, x: torch.Tensor) -> torch.Tensor:
    """``[out, H, W, in, H, W]``: which outputs have a non-zero gradient for which inputs."""
    jac = jacobian(lambda inp: fn(inp[None])[0], x)
    return jac.reshape(-1, SIDE, SIDE, *x.shape).abs() > 0


def _allowed_mask(out_groups, in_groups, strict):
    pos = torch.arange(SIDE * SIDE).reshape(SIDE, SIDE)
    later = pos[:, :, None, None] > pos[None, None]  # [H, W, H', W']: output after input
    same = pos[:, :, None, None] == pos[None, None]
    if strict:
        colour = in_groups[None, :] < out_groups[:, None]  # [out, in]
    else:
        colour = in_groups[None, :] <= out_groups[:, None]
    # [out, H, W, in, H', W']
    return later[None, :, :, None, :, :] | (
        same[None, :, :, None, :, :] & colour[:, None, None, :, None, None]
    )


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_is_autoregressive(float64, mask_type, image_channels, kernel_size):
    """Output (i, c) does not depend on inputs at (≥ i) for A, (> i) for B, by gradients."""
    torch.manual_seed(0)
    in_channels, out_channels = 2 * image_channels, 3 * image_channels
    conv = MaskedConv2d(in_channels, out_channels, kernel_size, mask_type, image_channels)
    torch.nn.init.normal_(conv.weight)
    x = torch.randn(in_channels, SIDE, SIDE)
    depends = _dependence(conv, x)
    allowed = _allowed_mask(
        channel_groups(out_channels, image_channels),
        channel_groups(in_channels, image_channels),
        strict=mask_type == "A",
    )
    assert not (depends & ~allowed).any()
    # The mask cuts only what it must: inside the kernel, every allowed input is seen.
    centre = SIDE // 2
    seen = depends[:, centre, centre]
    reach = kernel_size // 2
    in_kernel = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    in_kernel[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1] = True
    expected = allowed[:, centre, centre] & in_kernel
    assert torch.equal(seen, expected)


@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize(("num_layers", "kernel_size"), [(1, 3), (2, 3), (2, 5)])
def test_pixelcnn_is_autoregressive(float64, image_channels, num_layers, kernel_size):
    """The parameters of colour c at pixel i never depend on x at (i, ≥ c) or later pixels."""
    torch.manual_seed(0)
    net = PixelCNN(image_channels, 2, 4 * image_channels, num_layers, kernel_size, 3).double()
    x = torch.randn(image_channels, SIDE, SIDE)
    cond = torch.randn(1, 3, SIDE, SIDE)

    def params(inp):
        out = net(inp, cond)  # [1, C, P, H, W]
        return out.flatten(1, 2)

    depends = _dependence(params, x)
    out_groups = torch.arange(image_channels).repeat_interleave(2)
    allowed = _allowed_mask(out_groups, torch.arange(image_channels), strict=True)
    assert not (depends & ~allowed).any()
    # and the conditional of a pixel does use the pixel to its left and the one above
    assert depends[:, 2, 2][:, :, 2, 1].any()
    assert depends[:, 2, 2][:, :, 1, 2].any()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_pixelcnn_window(float64, num_layers):
    """Each conditional sees at most `window` rows up and columns aside, and reaches them."""
    side = 11
    torch.manual_seed(0)
    net = PixelCNN(1, 1, 4, num_layers, 3).double()
    assert net.window == num_layers
    x = torch.randn(1, side, side)
    jac = jacobian(lambda inp: net(inp[None])[0, 0, 0], x)  # [H, W, 1, H, W]
    i = j = side // 2
    seen = jac[i, j, 0].abs() > 0
    rows, cols = torch.nonzero(seen, as_tuple=True)
    r = net.window
    assert (rows >= i - r).all()
    assert ((cols - j).abs() <= r).all()
    assert seen[i - r, j]
    assert seen[i, j - r]
    assert seen[i - r, j + r]


def test_masks():
    assert torch.equal(
        pixelcnn_mask(1, 1, 3, "B")[0, 0],
        torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]),
    )
    rgb = pixelcnn_mask(3, 3, 1, "A", image_channels=3)[:, :, 0, 0]
    assert torch.equal(rgb, torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0]]))
    rgb_b = pixelcnn_mask(6, 3, 1, "B", image_channels=3)[:, :, 0, 0]
    assert torch.equal(rgb_b, torch.tensor([[1.0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_type": "C"}, "mask_type"),
        ({"kernel_size": 4}, "odd"),
        ({"kernel_size": 0}, "odd"),
        ({"image_channels": 3}, "multiple"),
    ],
)
def test_masked_conv_rejects_bad_arguments(kwargs, message):
    options = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "mask_type": "B", **kwargs}
    with pytest.raises(ValueError, match=message):
        MaskedConv2d(**options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"params": 0}, "params"),
        ({"kernel_size": 2}, "odd"),
        ({"hidden_channels": 4, "image_channels": 3}, "multiple"),
        ({"cond_channels": -1}, "cond_channels"),
    ],
)
def test_pixelcnn_rejects_bad_arguments(kwargs, message):
    options = {"image_channels": 1, "params": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        PixelCNN(**options)


def test_pixelcnn_shapes_broadcast():
    net = PixelCNN(3, 2, hidden_channels=6, num_layers=2, cond_channels=4)
    out = net(torch.rand(5, 3, 6, 7), torch.randn(2, 5, 4, 6, 7))
    assert out.shape == (2, 5, 3, 2, 6, 7)
    unconditional = PixelCNN(1, 1, hidden_channels=4, num_layers=2)
    assert unconditional(torch.rand(3, 1, 4, 4)).shape == (3, 1, 1, 4, 4)


@pytest.mark.parametrize(
    ("x_shape", "cond", "message"),
    [
        ((2, 2, 4, 4), (2, 3, 4, 4), "images"),
        ((2, 1, 4, 4), None, "needs a conditioning"),
        ((2, 1, 4, 4), (2, 2, 4, 4), "conditioning map"),
        ((2, 1, 4, 4), (2, 3, 4, 5), "conditioning map"),
    ],
)
def test_pixelcnn_rejects_bad_inputs(x_shape, cond, message):
    net = PixelCNN(1, 1, hidden_channels=4, num_layers=1, cond_channels=3)
    with pytest.raises(ValueError, match=message):
        net(torch.rand(x_shape), None if cond is None else torch.randn(cond))
    with pytest.raises(ValueError, match="unconditional"):
        PixelCNN(1, 1, 4, 1)(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize(
    ("image_channels", "num_layers", "kernel_size"),
    [(1, 1, 3), (1, 2, 3), (3, 2, 3), (1, 9, 3), (1, 2, 5), (2, 3, 3)],
)
def test_sampling_matches_the_teacher_forced_network(image_channels, num_layers, kernel_size):
    """A deterministic draw: every sampled value is what the network gives on the final image,
    so the patches the sampler runs on (the window around each pixel) change nothing."""
    torch.manual_seed(0)
    net = PixelCNN(image_channels, 1, 2 * image_channels, num_layers, kernel_size, cond_channels=2)
    cond = torch.randn(3, 2, 9, 11)

    def draw(params, index):
        return torch.tanh(params[:, 0])

    x = net.sample(draw, (3, image_channels, 9, 11), cond, progress=False)
    expected = torch.tanh(net(x, cond)[:, :, 0])
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)


def test_sampling_visits_pixels_in_raster_then_colour_order(capsys):
    net = PixelCNN(2, 1, 2, 1)
    visits = []

    def draw(params, index):
        visits.append(index)
        return torch.zeros(params.shape[0])

    net.sample(draw, (1, 2, 2, 2), progress=True, desc="testing order")
    assert visits == [(c, i, j) for i in range(2) for j in range(2) for c in range(2)]
    assert "testing order" in capsys.readouterr().err
