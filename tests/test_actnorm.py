import pytest
import torch

from pyro_vaeflow.transforms import ActNorm2d


def channel_stats(h):
    return h.mean(dim=(0, 2, 3)), h.std(dim=(0, 2, 3), unbiased=False)


def test_data_init_standardises_the_base_side_in_the_data_to_base_direction(float64):
    norm = ActNorm2d(3)
    x = torch.tensor([1.0, -2.0, 5.0]).reshape(3, 1, 1) + torch.tensor(
        [
            0.5,
            2.0,
            10.0,
        ]
    ).reshape(3, 1, 1) * torch.randn(32, 3, 5, 5)
    mean, std = channel_stats(norm.inv(x))
    torch.testing.assert_close(mean, torch.zeros(3))
    torch.testing.assert_close(std, torch.ones(3))
    assert bool(norm.initialized)


def test_data_init_in_the_base_to_data_direction_standardises_its_output(float64):
    norm = ActNorm2d(2)
    x = norm(3.0 + 4.0 * torch.randn(16, 2, 4, 4))
    mean, std = channel_stats(x)
    torch.testing.assert_close(mean, torch.zeros(2))
    torch.testing.assert_close(std, torch.ones(2))


def test_initialisation_happens_only_once():
    norm = ActNorm2d(2)
    norm.inv(torch.randn(8, 2, 3, 3))
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    norm.inv(100.0 + torch.randn(8, 2, 3, 3))
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_state_dict_round_trip_does_not_reinitialise():
    trained = ActNorm2d(2)
    trained.inv(5.0 * torch.randn(8, 2, 3, 3))
    loaded = ActNorm2d(2)
    loaded.load_state_dict(trained.state_dict())
    assert bool(loaded.initialized)
    x = -7.0 + torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(loaded.inv(x), trained.inv(x.clone()))


def test_zero_variance_channel_stays_finite():
    norm = ActNorm2d(2)
    x = torch.randn(8, 2, 3, 3)
    x[:, 1] = 0.25
    u = norm.inv(x)
    assert torch.isfinite(u).all()
    assert torch.isfinite(norm.log_abs_det_jacobian(u, x)).all()
    assert norm.log_scale[1].item() == 0.0
    torch.testing.assert_close(norm(u.clone()), x)


def test_identity_init_is_exact_and_not_data_dependent():
    norm = ActNorm2d(2, init="identity")
    x = 3.0 + torch.randn(4, 2, 3, 3)
    assert torch.equal(norm.inv(x), x)
    assert torch.equal(norm.log_abs_det_jacobian(x, x), torch.zeros(4))


def test_wrong_channels_raise_a_clear_error():
    with pytest.raises(ValueError, match=r"\[\.\.\., 2, H, W\]"):
        ActNorm2d(2)(torch.randn(4, 3, 5, 5))


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="init"):
        ActNorm2d(2, init="zeros")


def test_the_initialized_flag_is_read_until_seen_true_and_again_after_loading():
    norm = ActNorm2d(2)
    assert norm.pending_initialization()
    norm.inv(torch.randn(8, 2, 3, 3))
    assert not norm.pending_initialization()
    with torch.no_grad():
        norm.initialized.fill_(False)  # not read again: a GPU would wait for it at every call
    assert not norm.pending_initialization()
    norm.load_state_dict(ActNorm2d(2).state_dict())  # an uninitialised layer's state
    assert norm.pending_initialization()
