import pytest
import torch
from torch import nn

from pyro_vaeflow.transforms import (
    AdditiveCoupling2d,
    AffineCoupling2d,
    Squeeze2d,
    glow,
    realnvp,
)
from tests.registry import perturb


@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("squeeze", [0, 1, 2])
def test_identity_glow_is_exactly_the_identity(coupling, squeeze):
    flow = glow(
        1 if squeeze else 2,
        depth=3,
        hidden_channels=8,
        coupling=coupling,
        squeeze=squeeze,
        init="identity",
    )
    x = torch.rand(5, 1 if squeeze else 2, 8, 8)
    u = flow.inv(x)
    assert torch.equal(u, x)
    assert torch.equal(flow.log_abs_det_jacobian(u, x), torch.zeros(5))
    assert torch.equal(flow(u.clone()), x)


def test_glow_keeps_the_image_shape_and_needs_no_squeeze_for_rgb():
    flow = glow(3, depth=2, hidden_channels=8)
    assert flow.forward_shape(torch.Size([3, 8, 8])) == torch.Size([3, 8, 8])
    assert flow(torch.randn(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def test_glow_has_depth_steps_of_actnorm_conv_coupling():
    flow = glow(1, depth=4, hidden_channels=8, squeeze=1)
    names = [type(part).__name__ for part in flow.parts]
    assert names[0] == "Squeeze2d"
    assert names[-1] == "Unsqueeze2d"
    assert names[1:-1] == ["AdditiveCoupling2d", "InvConv1x1", "ActNorm2d"] * 4


def test_glow_data_init_gives_finite_log_prob_terms_on_pixels():
    flow = glow(1, depth=2, hidden_channels=8, squeeze=1, coupling="affine")
    x = (torch.randint(0, 256, (16, 1, 8, 8)) + torch.rand(16, 1, 8, 8)) / 256
    u = flow.inv(x)
    assert torch.isfinite(u).all()
    assert torch.isfinite(flow.log_abs_det_jacobian(u, x)).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coupling": "spline"}, "coupling"),
        ({"init": "random"}, "init"),
        ({"depth": 0}, "depth"),
    ],
)
def test_glow_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glow(2, **kwargs)


def test_coupling_needs_two_channels_and_says_how_to_get_them():
    with pytest.raises(ValueError, match="squeeze"):
        AdditiveCoupling2d(1)


@pytest.mark.parametrize(("cls", "factor"), [(AdditiveCoupling2d, 1), (AffineCoupling2d, 2)])
def test_coupling_accepts_a_custom_net(cls, factor, float64):
    net = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Tanh(), nn.Conv2d(4, factor * 2, 1))
    coupling = cls(4, net=net)
    assert coupling.net is net
    x = torch.randn(3, 4, 5, 5)
    u = coupling.inv(x)
    assert not torch.allclose(u, x)
    torch.testing.assert_close(coupling(u.clone()), x)


def test_affine_scale_is_bounded_and_invertible_in_float32():
    coupling = AffineCoupling2d(2, hidden_channels=8, scale_bound=3.0)
    with torch.no_grad():
        coupling.net[-1].bias[:1].fill_(-1e4)
        coupling.net[-1].bias[1:].fill_(0.5)
    x = torch.randn(4, 2, 6, 6)
    u, log_det = coupling.inverse_and_log_det(x)
    torch.testing.assert_close(log_det, torch.full((4,), 3.0 * 36))
    torch.testing.assert_close(coupling(u.clone()), x)


def test_squeeze_rejects_odd_sizes():
    with pytest.raises(ValueError, match="divisible by 2"):
        Squeeze2d()(torch.randn(1, 5, 5))


def test_realnvp_alternates_halves_and_starts_at_identity():
    flow = realnvp(5, num_layers=4, hidden_dims=(8, 8))
    assert [layer.reverse for layer in flow.parts] == [False, True, False, True]
    z = torch.randn(3, 5)
    assert torch.equal(flow.inv(z), z)


def test_realnvp_transforms_every_coordinate():
    flow = perturb(realnvp(4, num_layers=2, hidden_dims=(8, 8)))
    z = torch.randn(200, 4)
    assert ((flow.inv(z) - z).abs().mean(0) > 1e-3).all()


def test_realnvp_rejects_one_dimension():
    with pytest.raises(ValueError, match="dim >= 2"):
        realnvp(1)
