"""The model contract: every architecture of ``model_registry.CASES``, every phase it declares.

The counterpart of the transform suite (``test_transforms.py``) for models: the sites sit in
the data plate, the per-datum ELBO is finite, each declared phase trains exactly its parts,
save → load gives the same log-density, samples have the image shape and range, and bad images
get clear errors.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_vaeflow.checkpoint import CheckpointError
from pyro_vaeflow.infer import elbo
from pyro_vaeflow.models import (
    ARCHITECTURES,
    LatentVariableModel,
    TwoStageVAE,
    load_model,
    sample_options,
)
from pyro_vaeflow.training import fit, phase
from tests.model_registry import CASES

N = 4


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request):
    return request.param


@pytest.fixture
def model(case):
    torch.manual_seed(0)
    return case.build()


def phases_with_parts(model) -> list[str]:
    return [name for name, spec in model.phases.items() if not spec.trains or spec.parts(model)]


def test_every_architecture_is_in_the_registry():
    built = {case.build().architecture for case in CASES}
    assert built == set(ARCHITECTURES)


def test_the_declarations_are_consistent(model):
    assert set(model.default_schedule) <= set(model.phases)
    assert model.n_bits in range(1, 9)
    for spec in model.phases.values():
        assert all(hasattr(model, name) for name in spec.trains)  # a part, or None if absent
        assert all(isinstance(getattr(model, flag), bool) for flag in spec.switches_off)


def test_every_site_sits_in_the_data_plate(case, model):
    x = case.images(N)
    guide = poutine.trace(model.guide).get_trace(x)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x)
    guide.compute_log_prob()
    trace.compute_log_prob()
    sites = [
        site
        for t in (guide, trace)
        for site in t.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]
    assert any(site["is_observed"] for site in sites)
    for site in sites:
        frames = {frame.name: frame.size for frame in site["cond_indep_stack"]}
        assert frames.get("data") == N, site["name"]
        assert site["log_prob"].shape == (N,), site["name"]


def test_the_per_datum_elbo_is_finite(case, model):
    bound = elbo(model.model, model.guide, case.images(N))
    assert bound.shape == (N,)
    assert torch.isfinite(bound).all()


def test_each_phase_gives_gradients_to_exactly_its_parts(case, model):
    x = case.images(N)
    for name in phases_with_parts(model):
        spec = model.phases[name]
        parts = spec.parts(model)
        expected = {n for n, _ in model.named_parameters() if n.split(".")[0] in parts}
        model.zero_grad(set_to_none=True)
        with pyro.get_param_store().scope(), phase(model, name):
            with poutine.trace(param_only=True) as capture:
                loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
            loss.backward()
            registered = {
                id(site["value"].unconstrained()) for site in capture.trace.nodes.values()
            }
            trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert set(trained) == (expected if spec.trains else set(dict(model.named_parameters())))
        assert [n for n, p in trained.items() if p.grad is None] == [], name
        assert [n for n, p in trained.items() if not p.grad.abs().sum() > 0] == [], name
        assert all(torch.isfinite(p.grad).all() for p in trained.values()), name
        assert [n for n, p in trained.items() if id(p) not in registered] == [], name
        assert all(p.requires_grad for p in model.parameters())  # restored after the phase


def test_a_training_step_of_each_phase_moves_exactly_its_parts(case, model):
    for name in phases_with_parts(model):
        parts = model.phases[name].parts(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        x = case.images(N)
        fit(model, x, name, epochs=1, batch_size=N, lr=1e-2, val_fraction=0.5, progress=False)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert moved, name
        assert {n.split(".")[0] for n in moved} <= set(parts), name


def test_save_then_load_gives_an_identical_log_density(case, model, tmp_path):
    path = model.save(tmp_path / "model.pt")
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    for other in set(ARCHITECTURES.values()) - {type(model)}:
        with pytest.raises(CheckpointError, match=f"not a {other.__name__}"):
            other.load(path)
    x = case.images(N)
    model.eval(), loaded.eval()
    pyro.set_rng_seed(1)
    expected = elbo(model.model, model.guide, x)
    pyro.set_rng_seed(1)
    assert torch.equal(elbo(loaded.model, loaded.guide, x), expected)


def test_save_then_load_keeps_every_switch(case, model, tmp_path):
    if not model.switches():
        pytest.skip(f"{type(model).__name__} has no switches")
    for flag in model.switches():
        setattr(model, flag, False)
        loaded = load_model(model.save(tmp_path / f"{flag}.pt"))
        assert getattr(loaded, flag) is False
        setattr(model, flag, True)
        assert getattr(load_model(model.save(tmp_path / "on.pt")), flag) is True


def test_samples_have_the_image_shape_and_range(case, model):
    model.eval()
    samples = model.sample(3, **sample_options(model, progress=False))
    assert samples.shape == (3, *model.image_shape)
    assert torch.isfinite(samples).all()
    if case.samples_on_levels:
        levels = samples * (2**model.n_bits - 1)
        assert samples.min() >= 0
        assert samples.max() <= 1
        torch.testing.assert_close(levels, levels.round())
    with torch.no_grad():
        for name, sampler in model.fid_samplers(4, temperature=0.5).items():
            images = sampler.draw(2)
            assert images.shape == (2, *model.image_shape), name
            assert torch.isfinite(images).all(), name


BAD_IMAGES = [
    (torch.full((2, 1, 28, 28), float("nan")), "NaN/Inf"),
    (torch.full((2, 1, 28, 28), 1.5), r"\[0, 1\]"),
    (-torch.rand(2, 1, 28, 28), r"\[0, 1\]"),
    (torch.rand(2, 3, 28, 28), r"\[N, 1, 28, 28\]"),
    (torch.rand(2, 1, 28, 27), r"\[N, 1, 28, 28\]"),
    (torch.rand(1, 28, 28), r"\[N, 1, 28, 28\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "dequantise"),
]


@pytest.mark.parametrize(
    ("images", "message"),
    BAD_IMAGES,
    ids=["nan", "above-one", "negative", "channels", "width", "no-batch", "uint8"],
)
def test_bad_images_get_a_clear_error(model, images, message):
    queries = [model.model, model.guide]
    if isinstance(model, (LatentVariableModel, TwoStageVAE)):
        queries.append(model.encode)
    for query in queries:
        with pytest.raises(ValueError, match=message):
            query(images)
