"""The CPU matrix-product path of Glow's conditioner computes the same network as ``conv2d``."""

import pytest
import torch
from torch import nn

from pyro_vaeflow.transforms import AdditiveCoupling2d, AffineCoupling2d, glow_conditioner
from pyro_vaeflow.transforms.coupling import GlowConditioner


def random_conditioner(in_channels, out_channels, hidden):
    """A conditioner with every weight random (the default last layer is zero)."""
    net = glow_conditioner(in_channels, out_channels, hidden)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.5)
    return net


def conv2d_path(net, x):
    """The plain ``nn.Sequential`` forward pass, with ``conv2d``."""
    return nn.Sequential.forward(net, x)


def outputs_and_gradients(net, x, forward):
    out = forward(net, x)
    # Not randn_like: it takes a generator only from torch 2.10.
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad(out, [x, *net.parameters()], grad_out)
    return out, grads


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "hidden", "size"),
    [(2, 4, 32, (14, 14)), (4, 8, 16, (7, 7)), (3, 6, 8, (5, 9)), (1, 2, 4, (1, 1))],
)
def test_matmul_path_matches_conv2d_in_outputs_and_gradients(
    float64, in_channels, out_channels, hidden, size
):
    net = random_conditioner(in_channels, out_channels, hidden)
    x = torch.randn(3, in_channels, *size, requires_grad=True)
    out, grads = outputs_and_gradients(net, x, GlowConditioner.forward)
    ref, ref_grads = outputs_and_gradients(net, x, conv2d_path)
    assert out.shape == ref.shape == (3, out_channels, *size)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)


def test_cpu_forward_takes_the_matmul_path_and_runs_no_convolution(monkeypatch):
    net = random_conditioner(2, 4, 8)
    x = torch.randn(2, 2, 6, 6)
    expected = conv2d_path(net, x)

    def no_conv(self, x):
        raise AssertionError("the CPU path ran a convolution")

    monkeypatch.setattr(nn.Conv2d, "forward", no_conv)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


def test_a_non_contiguous_channel_slice_gives_the_same_result(float64):
    net = random_conditioner(2, 4, 8)
    h = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(net(h[:, :2]), conv2d_path(net, h[:, :2].contiguous()))


def test_other_devices_use_the_sequential_path(monkeypatch):
    # "meta" stands in for CUDA here: any device but the CPU keeps the plain convolutions.
    def no_matmul(self, x):
        raise AssertionError("the matmul path ran off the CPU")

    monkeypatch.setattr(GlowConditioner, "_forward_matmul", no_matmul)
    net = glow_conditioner(2, 4, 8).to("meta")
    assert net(torch.empty(2, 2, 6, 6, device="meta")).shape == (2, 4, 6, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_the_sequential_path(monkeypatch):
    def no_matmul(self, x):
        raise AssertionError("the matmul path ran on CUDA")

    monkeypatch.setattr(GlowConditioner, "_forward_matmul", no_matmul)
    net = random_conditioner(2, 4, 8).cuda()
    assert net(torch.randn(2, 2, 6, 6, device="cuda")).shape == (2, 4, 6, 6)


def test_a_replaced_or_hooked_layer_falls_back_to_the_sequential_path(float64):
    x = torch.randn(2, 2, 6, 6)
    leaky = random_conditioner(2, 4, 8)
    leaky[1] = nn.LeakyReLU(0.2)
    torch.testing.assert_close(leaky(x), conv2d_path(leaky, x))
    dilated = random_conditioner(2, 4, 8)
    dilated[0].dilation, dilated[0].padding = (2, 2), (2, 2)
    torch.testing.assert_close(dilated(x), conv2d_path(dilated, x))
    hooked, seen = random_conditioner(2, 4, 8), []
    hooked[2].register_forward_hook(lambda module, args, out: seen.append(out.shape))
    hooked(x)
    assert seen == [torch.Size([2, 8, 6, 6])]


def test_an_unbatched_image_uses_the_sequential_path(float64):
    net = random_conditioner(2, 4, 8)
    x = torch.randn(2, 6, 6)
    torch.testing.assert_close(net(x), conv2d_path(net, x[None])[0])


def test_the_conditioner_keeps_the_sequential_layout_and_state_dict():
    net = glow_conditioner(2, 4, 8)
    plain = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
    )
    assert isinstance(net, nn.Sequential)
    assert len(net) == 5
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    net.load_state_dict(plain.state_dict())  # a checkpoint of the plain Sequential loads
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(net(x), plain(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(glow_conditioner(2, 4, 8)(x), torch.zeros(2, 4, 5, 5))


@pytest.mark.parametrize("coupling_type", [AdditiveCoupling2d, AffineCoupling2d])
def test_couplings_are_the_same_with_either_path(float64, coupling_type):
    coupling = coupling_type(4, hidden_channels=16)
    with torch.no_grad():
        for parameter in coupling.net.parameters():
            parameter.normal_(0.0, 0.2)
    x = torch.randn(3, 4, 6, 6)
    u, log_det = coupling.inverse_and_log_det(x)
    coupling.net.forward = lambda h: conv2d_path(coupling.net, h)
    u_ref, log_det_ref = coupling.inverse_and_log_det(x)
    torch.testing.assert_close(u, u_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_det, log_det_ref, rtol=0, atol=1e-12)
