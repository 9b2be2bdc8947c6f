"""Gradient checkpointing over the Glow steps changes memory, never values or gradients."""

import pyro
import pytest
import torch
import torch.utils.checkpoint
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.transforms import ActNorm2d, ComposeFlow, InvConv1x1, glow
from tests.helpers import fashion_images, tiny_vae
from tests.registry import perturb

GLOWS = {
    "additive": {"channels": 2, "coupling": "additive", "squeeze": 0},
    "affine-squeeze": {"channels": 1, "coupling": "affine", "squeeze": 1},
}


def twin_glows(case: str, initialise: bool = True) -> tuple[ComposeFlow, ComposeFlow]:
    """A Glow flow without and with checkpointing, with the same weights."""
    kwargs = {**GLOWS[case], "depth": 2, "hidden_channels": 6}
    plain = glow(**kwargs)
    if initialise:
        plain.inv(3.0 + 2.0 * torch.randn(16, kwargs["channels"], 4, 4))
        perturb(plain)
    checkpointed = glow(**kwargs, checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def images(case: str, n: int = 5) -> torch.Tensor:
    return torch.rand(n, GLOWS[case]["channels"], 4, 4)


def nll_and_grads(flow: ComposeFlow, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A Glow training loss, -log N(f^{-1}(x); 0, I) - log|det ∂f^{-1}/∂x|, and its gradients."""
    u, log_det = flow.inverse_and_log_det(x)
    loss = (0.5 * u.pow(2).sum(dim=(-3, -2, -1)) + log_det).sum()
    grads = torch.autograd.grad(loss, [x, *flow.parameters()])
    return loss, list(grads)


@pytest.fixture
def count_checkpoints(monkeypatch):
    """Counts the calls of ``torch.utils.checkpoint.checkpoint``."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counted(function, *args, **kwargs):
        calls.append(function)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    return calls


@pytest.mark.parametrize("case", sorted(GLOWS))
def test_training_step_loss_and_gradients_match(case, float64):
    plain, checkpointed = twin_glows(case)
    x = images(case).requires_grad_()
    loss, grads = nll_and_grads(plain, x)
    loss_ckpt, grads_ckpt = nll_and_grads(checkpointed, x)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(grads_ckpt) == 1 + len(list(plain.parameters()))
    for grad, grad_ckpt in zip(grads, grads_ckpt, strict=True):
        torch.testing.assert_close(grad_ckpt, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(GLOWS))
def test_sampling_direction_gradients_match(case, float64):
    plain, checkpointed = twin_glows(case)
    u = images(case).requires_grad_()
    results = []
    for flow in (plain, checkpointed):
        x, log_det = flow.forward_and_log_det(u)
        loss = (x.sin().sum(dim=(-3, -2, -1)) * log_det).sum()
        results.append([loss, *torch.autograd.grad(loss, [u, *flow.parameters()])])
    for value, value_ckpt in zip(*results, strict=True):
        torch.testing.assert_close(value_ckpt, value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(GLOWS))
def test_data_dependent_init_is_identical_on_the_first_call(case, float64, count_checkpoints):
    plain, checkpointed = twin_glows(case, initialise=False)
    x = (3.0 + 2.0 * images(case, 8)).requires_grad_()
    loss, grads = nll_and_grads(plain, x)
    loss_ckpt, grads_ckpt = nll_and_grads(checkpointed, x)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-12, atol=1e-12)
    for grad, grad_ckpt in zip(grads, grads_ckpt, strict=True):
        torch.testing.assert_close(grad_ckpt, grad, rtol=1e-10, atol=1e-12)
    # The pending actnorms ran outside checkpointing; the convolutions and couplings inside.
    assert not any(isinstance(f.__self__, ActNorm2d) for f in count_checkpoints)
    assert len(count_checkpoints) == 2 * 2
    state, state_ckpt = plain.state_dict(), checkpointed.state_dict()
    for name, value in state.items():
        torch.testing.assert_close(state_ckpt[name], value, rtol=0, atol=0)
    assert all(bool(m.initialized) for m in checkpointed.modules() if isinstance(m, ActNorm2d))
    # From the second call on, the actnorms are checkpointed too.
    count_checkpoints.clear()
    nll_and_grads(checkpointed, x)
    assert len(count_checkpoints) == 3 * 2


def test_every_part_with_parameters_is_checkpointed_once(float64, count_checkpoints):
    _, checkpointed = twin_glows("affine-squeeze")
    u = checkpointed.inv(images("affine-squeeze"))
    with_parameters = [p for p in checkpointed.parts if next(p.parameters(), None) is not None]
    assert [f.__self__ for f in count_checkpoints] == with_parameters[::-1]
    assert all(f.__name__ == "inverse_and_log_det" for f in count_checkpoints)
    # The composition's cache still answers the log-determinant without another pass.
    x = images("affine-squeeze")
    u = checkpointed.inv(x)
    count_checkpoints.clear()
    checkpointed.log_abs_det_jacobian(u, x)
    assert count_checkpoints == []


def test_no_checkpointing_without_gradients(float64, count_checkpoints):
    plain, checkpointed = twin_glows("additive")
    x = images("additive")
    with torch.no_grad():
        u, log_det = checkpointed.inverse_and_log_det(x)
    with torch.inference_mode():
        checkpointed.forward_and_log_det(x)
    assert count_checkpoints == []
    assert u.grad_fn is None
    with torch.no_grad():
        expected_u, expected_log_det = plain.inverse_and_log_det(x)
    torch.testing.assert_close(u, expected_u, rtol=0, atol=0)
    torch.testing.assert_close(log_det, expected_log_det, rtol=0, atol=0)
    plain.inverse_and_log_det(x.requires_grad_())
    assert count_checkpoints == []  # checkpoint=False never checkpoints


def test_conditioner_activations_are_not_stored(float64):
    plain, checkpointed = twin_glows("additive")
    hidden = plain.parts[0].net[0].out_channels
    x = images("additive").requires_grad_()

    def stored_channels(flow):
        shapes = []

        def pack(tensor):
            shapes.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            flow.inverse_and_log_det(x)
        # Channels of the saved images: [N, C, H, W], or [N, H, W, C] on the CPU's matmul path.
        return {shape[i] for shape in shapes if len(shape) == 4 for i in (1, 3)}

    assert hidden in stored_channels(plain)
    assert hidden not in stored_channels(checkpointed)


def test_extra_repr_names_the_option():
    flow = glow(2, depth=1, hidden_channels=4, checkpoint=True)
    assert flow.checkpoint
    assert "checkpoint=True" in nn.Module.__repr__(flow)
    assert ComposeFlow([InvConv1x1(2)]).extra_repr() == ""
    assert ComposeFlow([InvConv1x1(2)], cache_size=0, checkpoint=True).extra_repr() == (
        "cache_size=0, checkpoint=True"
    )


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_vaeflow_elbo_and_gradients_match(coupling, float64):
    plain = tiny_vae(glow_coupling=coupling)
    perturb(plain.glow, 0.1)
    checkpointed = tiny_vae(glow_coupling=coupling, glow_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.glow.checkpoint
    assert not plain.glow.checkpoint
    x = fashion_images(4).double()
    results = []
    for vae in (plain, checkpointed):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
        results.append([loss, *torch.autograd.grad(loss, list(vae.parameters()))])
    assert len(results[0]) == 1 + len(list(plain.parameters()))
    for value, value_ckpt in zip(*results, strict=True):
        torch.testing.assert_close(value_ckpt, value, rtol=1e-9, atol=1e-10)


def test_vaeflow_config_records_and_restores_the_option(tmp_path):
    vae = tiny_vae(glow_checkpoint=True)
    assert vae.config["glow_checkpoint"] is True
    assert tiny_vae().config["glow_checkpoint"] is False
    loaded = VAEFlow.load(vae.save(tmp_path / "vae.pt"))
    assert loaded.config == vae.config
    assert loaded.glow.checkpoint
