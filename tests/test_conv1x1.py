import pytest
import torch

from pyro_vaeflow.transforms import InvConv1x1
from tests.registry import perturb


def test_random_rotation_init_is_orthogonal_with_zero_log_det(float64):
    conv = InvConv1x1(5)
    weight = conv.weight()
    torch.testing.assert_close(weight @ weight.T, torch.eye(5))
    torch.testing.assert_close(conv.log_s.sum(), torch.tensor(0.0))


def test_identity_init_is_exact():
    conv = InvConv1x1(4, init="identity")
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(conv.weight(), torch.eye(4))
    assert torch.equal(conv.inv(x), x)
    assert torch.equal(conv(x.clone()), x)


def test_inverse_weight_inverts_the_lu_weight(float64):
    conv = perturb(InvConv1x1(6))
    torch.testing.assert_close(conv.weight() @ conv.inverse_weight(), torch.eye(6))


def test_log_det_is_hw_times_sum_of_log_s(float64):
    conv = perturb(InvConv1x1(3))
    u = torch.randn(2, 3, 5, 7)
    expected = -5 * 7 * conv.log_s.sum()
    torch.testing.assert_close(conv.log_abs_det_jacobian(u, conv(u)), expected.expand(2))


def test_inverse_weight_is_cached_until_a_parameter_changes():
    conv = perturb(InvConv1x1(4))
    with torch.no_grad():
        first = conv.inverse_weight()
        assert conv.inverse_weight() is first
        conv.log_s.add_(0.5)
        second = conv.inverse_weight()
    assert second is not first
    torch.testing.assert_close(conv.weight() @ second, torch.eye(4), atol=1e-5, rtol=0)


def test_inverse_weight_with_a_graph_is_not_reused_after_backward():
    conv = perturb(InvConv1x1(3))
    for _ in range(2):
        conv.inverse_weight().sum().backward()
    assert conv.log_s.grad is not None


def test_wrong_channels_raise_a_clear_error():
    with pytest.raises(ValueError, match=r"InvConv1x1 expects images of shape \[\.\.\., 4, H, W\]"):
        InvConv1x1(4).inv(torch.randn(2, 3, 5, 5))


def test_two_outputs_with_graphs_can_be_backpropagated_separately():
    conv = perturb(InvConv1x1(3))
    x1, x2 = conv(torch.randn(2, 3, 4, 4)), conv(torch.randn(2, 3, 4, 4))
    x1.sum().backward()
    x2.sum().backward()
    assert conv.log_s.grad is not None


def test_an_input_modified_in_place_is_not_served_from_the_cache():
    conv = perturb(InvConv1x1(3))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        u = conv.inv(x)
        x.mul_(2.0)
        fresh = conv.inv(x)
    assert fresh is not u
    torch.testing.assert_close(fresh, 2.0 * u)
