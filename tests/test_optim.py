"""MultiTensorAdam: Pyro's Adam updates and clipping, its state format, and a changing set."""

from __future__ import annotations

import copy

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vaeflow.training import MultiTensorAdam, phase
from tests.helpers import fashion_images, tiny_vae


def _train(vae, optim, steps: int, phase_name: str = "joint", seed: int = 0):
    x = fashion_images(16)
    with pyro.get_param_store().scope(), phase(vae, phase_name):
        pyro.set_rng_seed(seed)
        svi = SVI(vae.model, vae.guide, optim, Trace_ELBO())
        losses = [svi.step(x) for _ in range(steps)]
        state = optim.get_state()
    return losses, state


@pytest.mark.parametrize("clip", [{}, {"clip_norm": 0.5}, {"clip_value": 1e-3}, {"clip_norm": 1e3}])
def test_it_makes_pyro_adams_updates(clip):
    ours, pyros = tiny_vae(), tiny_vae()
    pyros.load_state_dict(ours.state_dict())
    losses, _ = _train(ours, MultiTensorAdam(lr=1e-2, **clip), 4)
    pyro_losses, _ = _train(pyros, pyro.optim.Adam({"lr": 1e-2}, clip or None), 4)
    assert losses == pytest.approx(pyro_losses, rel=1e-5)
    for (name, a), b in zip(ours.state_dict().items(), pyros.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_clipping_changes_the_updates():
    clipped, free = tiny_vae(), tiny_vae()
    free.load_state_dict(clipped.state_dict())
    # Adam undoes a constant rescaling of a gradient, so clipping shows from the second step on
    _train(clipped, MultiTensorAdam(lr=1e-2, clip_norm=1e-4), 3)
    _train(free, MultiTensorAdam(lr=1e-2), 3)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(clipped.state_dict().values(), free.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("source", ["ours", "pyro"])
def test_its_state_and_pyros_load_into_either_optimiser(source):
    vae = tiny_vae()
    first = MultiTensorAdam(lr=1e-2) if source == "ours" else pyro.optim.Adam({"lr": 1e-2})
    _, state = _train(vae, first, 2)
    assert state
    assert {int(s["state"][0]["step"]) for s in state.values()} == {2}
    # the same continuation from either optimiser, each loading the other's state
    mine, theirs = copy.deepcopy(vae), copy.deepcopy(vae)
    into_pyro = pyro.optim.Adam({"lr": 1e-2})
    into_pyro.set_state(copy.deepcopy(state))
    _train(theirs, into_pyro, 1, seed=1)
    into_ours = MultiTensorAdam(lr=1e-2)
    into_ours.set_state(copy.deepcopy(state))
    _, continued = _train(mine, into_ours, 1, seed=1)
    for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert {int(s["state"][0]["step"]) for s in continued.values()} == {3}


def test_only_the_parameters_of_the_step_move_and_the_state_is_kept():
    vae = tiny_vae()
    optim = MultiTensorAdam(lr=1e-2)
    _, first = _train(vae, optim, 1, "vae")
    glow_before = {k: v.clone() for k, v in vae.state_dict().items() if k.startswith("glow.")}
    rest_before = {k: v.clone() for k, v in vae.state_dict().items() if k not in glow_before}
    _, second = _train(vae, optim, 1, "glow")
    # the encoder, decoder and prior have Adam state and zeroed gradients, yet must not move
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in rest_before.items())
    encoder_after_glow = {k: v.clone() for k, v in vae.state_dict().items() if "encoder" in k}
    assert any(not torch.equal(glow_before[k], vae.state_dict()[k]) for k in glow_before)
    _, third = _train(vae, optim, 1, "vae")
    assert any(
        not torch.equal(encoder_after_glow[k], vae.state_dict()[k]) for k in encoder_after_glow
    )
    steps = {name: int(s["state"][0]["step"]) for name, s in third.items()}
    assert {steps[name] for name in first} == {2}  # two "vae" steps
    assert {steps[name] for name in set(second) - set(first)} == {1}  # one "glow" step
    assert set(first) < set(second)
    assert set(second) == set(third)


def test_a_step_without_parameters_does_nothing():
    MultiTensorAdam()([])


@pytest.mark.parametrize("bad", [{"clip_norm": 0.0}, {"clip_value": -1.0}])
def test_bad_clipping_is_refused(bad):
    with pytest.raises(ValueError, match="must be positive"):
        MultiTensorAdam(**bad)
