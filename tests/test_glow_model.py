"""The standalone multi-scale Glow: its density, its bijection, and its life as a Pyro model."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO

from pyro_vaeflow import infer
from pyro_vaeflow.checkpoint import CheckpointError
from pyro_vaeflow.models import Glow
from pyro_vaeflow.models.glow import MultiscaleGlowDistribution
from pyro_vaeflow.training import fit
from pyro_vaeflow.transforms import ActNorm2d
from tests.helpers import fashion_images, fashion_pixels
from tests.registry import perturb

TINY = {"depth": 2, "hidden_channels": 6}
SHAPES = {
    "1x4x4-L2": ((1, 4, 4), 2),
    "2x4x4-L1": ((2, 4, 4), 1),
    "2x4x4-L2": ((2, 4, 4), 2),
}


def trained_like(image_shape, levels, scale: float = 0.2, **kwargs) -> Glow:
    """A tiny Glow initialised on data, then moved away from its initial weights."""
    model = Glow(image_shape, levels, **{**TINY, **kwargs})
    model.log_prob(torch.rand(16, *image_shape))
    return perturb(model, scale)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum() - 0.5 * z.numel() * math.log(2 * math.pi)


def flat(latents: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([z.flatten() for z in latents])


@pytest.mark.parametrize(
    ("image_shape", "levels", "expected"),
    [
        ((1, 28, 28), 2, [(2, 14, 14), (8, 7, 7)]),
        ((3, 8, 8), 3, [(6, 4, 4), (12, 2, 2), (48, 1, 1)]),
        ((2, 4, 4), 1, [(8, 2, 2)]),
    ],
)
def test_latent_shapes_follow_the_multiscale_architecture(image_shape, levels, expected):
    model = Glow(image_shape, levels, depth=1, hidden_channels=4)
    assert model.latent_shapes == expected
    assert sum(math.prod(shape) for shape in expected) == model.num_dims
    latents = model.encode(torch.rand(3, *image_shape))
    assert [tuple(z.shape[1:]) for z in latents] == expected
    steps = [type(part).__name__ for part in model.levels[0].flow.parts]
    assert steps == ["AffineCoupling2d", "InvConv1x1", "ActNorm2d"]  # base → data order
    assert model.levels[-1].prior is None
    assert all(lv.prior for lv in model.levels[:-1])


@pytest.mark.parametrize("learn_top", [True, False])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_log_prob_is_the_change_of_variables_to_standard_noise(case, coupling, learn_top, float64):
    r"""x ↦ ε (every latent standardised by its prior) maps p(x) to N(0, I), so
    log p(x) = log N(ε(x); 0, I) + log|det ∂ε/∂x|, by autograd over the whole map."""
    image_shape, levels = SHAPES[case]
    model = trained_like(image_shape, levels, coupling=coupling, learn_top=learn_top)
    x = torch.rand(3, *image_shape)
    log_p = model.log_prob(x)
    assert log_p.shape == (3,)
    for image, value in zip(x, log_p, strict=True):

        def noise(image):
            return flat(model.encode(image, standardize=True))

        jacobian = torch.autograd.functional.jacobian(noise, image).reshape(model.num_dims, -1)
        brute = standard_normal_log_prob(noise(image)) + torch.linalg.slogdet(jacobian)[1]
        torch.testing.assert_close(value, brute, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_log_prob_with_standard_priors_uses_the_data_to_latent_log_det(case, float64):
    image_shape, levels = SHAPES[case]
    # min_scale 1e-300 vanishes next to e^0 = 1 in float64: the split priors stay N(0, I)
    model = Glow(image_shape, levels, coupling="affine", learn_top=False, min_scale=1e-300, **TINY)
    model.log_prob(torch.rand(16, *image_shape))
    for level in model.levels:
        perturb(level.flow, 0.2)
    x = torch.rand(*image_shape)

    def latents(image):
        return flat(model.encode(image))

    jacobian = torch.autograd.functional.jacobian(latents, x).reshape(model.num_dims, -1)
    brute = standard_normal_log_prob(latents(x)) + torch.linalg.slogdet(jacobian)[1]
    torch.testing.assert_close(model.log_prob(x), brute, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_encode_and_decode_are_exact_inverses(case, float64):
    image_shape, levels = SHAPES[case]
    # Mild weights: stronger random ones make decoded noise reach ~1e9, beyond float64's
    # precision for an exact round trip.
    model = trained_like(image_shape, levels, scale=0.05, coupling="affine")
    x = torch.rand(4, 2, *image_shape)  # two batch dims
    for standardize in (False, True):
        latents = model.encode(x, standardize=standardize)
        assert all(z.shape[:2] == (4, 2) for z in latents)
        torch.testing.assert_close(model.decode(latents, standardized=standardize), x)
    noise = [torch.randn(5, *shape) for shape in model.latent_shapes]
    back = model.encode(model.decode(noise, standardized=True), standardize=True)
    for z, z_back in zip(noise, back, strict=True):
        torch.testing.assert_close(z_back, z)


@pytest.mark.parametrize("temperature", [0.0, 0.5, 0.7, 1.3])
def test_temperature_scales_the_standardised_latents_exactly(temperature, float64):
    model = trained_like((1, 8, 8), 2, learn_top=True)
    noise = [torch.randn(6, *shape) for shape in model.latent_shapes]
    x = model.decode(noise, standardized=True, temperature=temperature)
    for z, eps in zip(model.encode(x, standardize=True), noise, strict=True):
        torch.testing.assert_close(z, temperature * eps)
    # rsample draws its noise in the order of latent_shapes and decodes it the same way.
    torch.manual_seed(3)
    sample = model.distribution(temperature).expand([6]).rsample()
    torch.manual_seed(3)
    again = [torch.randn(6, *shape) for shape in model.latent_shapes]
    torch.testing.assert_close(sample, model.decode(again, True, temperature))


def test_fresh_priors_are_standard_so_temperature_scales_the_latents(float64):
    model = Glow((1, 8, 8), 2, **TINY)
    model.log_prob(torch.rand(16, 1, 8, 8))
    torch.manual_seed(0)
    cold = model.encode(model.sample(4, temperature=0.5))
    torch.manual_seed(0)
    hot = model.encode(model.sample(4, temperature=1.0))
    for z_cold, z_hot in zip(cold, hot, strict=True):
        torch.testing.assert_close(z_cold, 0.5 * z_hot)


def test_samples_are_finite_images_with_a_finite_density():
    model = Glow((1, 28, 28), 2, **TINY)
    model.log_prob(fashion_images(32))
    samples = model.sample(8)
    assert samples.shape == (8, 1, 28, 28)
    assert samples.grad_fn is None
    assert torch.isfinite(samples).all()
    assert torch.isfinite(model.log_prob(samples)).all()
    assert model.sample(0).shape == (0, 1, 28, 28)


def test_trace_elbo_loss_is_minus_the_summed_log_prob(float64):
    model = trained_like((1, 8, 8), 2)
    x = torch.rand(5, 1, 8, 8)
    expected = -model.log_prob(x).sum()
    torch.testing.assert_close(
        torch.as_tensor(Trace_ELBO().loss(model.model, model.guide, x)), expected.detach()
    )
    vectorised = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    torch.testing.assert_close(
        vectorised.differentiable_loss(model.model, model.guide, x), expected
    )


def test_infer_elbo_and_log_likelihood_are_the_exact_log_prob(float64):
    model = trained_like((1, 8, 8), 2)
    x = torch.rand(4, 1, 8, 8)
    expected = model.log_prob(x).detach()
    torch.testing.assert_close(infer.elbo(model.model, model.guide, x, num_particles=3), expected)
    torch.testing.assert_close(
        infer.elbo(model.model, model.guide, x, num_particles=2, vectorize=False), expected
    )
    estimate = infer.log_likelihood(
        model.model, model.guide, x, num_samples=6, chunk_size=4, progress=False
    )
    torch.testing.assert_close(estimate, expected)


def test_checkpointing_gives_the_same_loss_and_gradients(float64):
    plain = Glow((1, 8, 8), 2, coupling="affine", **TINY)
    checkpointed = Glow((1, 8, 8), 2, coupling="affine", checkpoint=True, **TINY)
    checkpointed.load_state_dict(plain.state_dict())
    assert all(level.flow.checkpoint for level in checkpointed.levels)
    x = torch.rand(6, 1, 8, 8)
    for step in range(2):  # the first call also initialises actnorm, on both alike
        results = []
        for model in (plain, checkpointed):
            loss = -model.log_prob(x).sum()
            results.append([loss, *torch.autograd.grad(loss, list(model.parameters()))])
        for value, value_ckpt in zip(*results, strict=True):
            torch.testing.assert_close(value_ckpt, value, rtol=1e-10, atol=1e-12)
        if step == 0:
            perturb(plain, 0.1)
            checkpointed.load_state_dict(plain.state_dict())


def test_a_loaded_model_keeps_its_actnorm_initialisation(tmp_path):
    model = trained_like((1, 8, 8), 2, coupling="additive", learn_top=False, checkpoint=True)
    x = torch.rand(4, 1, 8, 8)
    loaded = Glow.load(model.save(tmp_path / "glow.pt"))
    assert all(bool(m.initialized) for m in loaded.modules() if isinstance(m, ActNorm2d))
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    assert not list(Glow((1, 8, 8), 2, learn_top=False, **TINY).top.parameters())


def test_load_refuses_weights_that_do_not_fit(tmp_path):
    path = Glow((1, 8, 8), 2, **TINY).save(tmp_path / "glow.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["depth"] = 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        Glow.load(path)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (((1, 28, 28), 3), {}, r"divisible by 8.*levels <= 2"),
        (((1, 6, 5), 1), {}, "H and W must be even"),
        (((1, 8, 8), 2), {"coupling": "spline"}, "coupling"),
        (((1, 8, 8), 0), {}, "levels"),
        (((1, 8, 8), 2), {"depth": 0}, "depth"),
        (((8, 8), 2), {}, "image_shape"),
    ],
)
def test_bad_configurations_give_clear_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Glow(*args, **kwargs)


def test_bad_values_and_latents_give_clear_errors():
    model = Glow((1, 8, 8), 2, **TINY)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 1, 8, 8\]"):
        model.log_prob(torch.rand(3, 2, 8, 8))
    with pytest.raises(ValueError, match="expected 2 latents"):
        model.decode([torch.randn(1, 8, 2, 2)])
    with pytest.raises(ValueError, match="latent 1"):
        model.decode([torch.randn(1, 2, 4, 4), torch.randn(1, 8, 4, 4)])
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        model.distribution().log_prob(torch.full((1, 1, 8, 8), math.inf))
    with pytest.raises(ValueError, match="broadcast"):
        model.distribution().expand([3]).log_prob(torch.rand(2, 1, 8, 8))


def test_distribution_shapes_expand_and_reparameterised_samples():
    model = trained_like((1, 8, 8), 2)
    d = model.distribution(temperature=0.7)
    assert isinstance(d, MultiscaleGlowDistribution)
    assert d.has_rsample
    assert d.batch_shape == ()
    assert d.event_shape == (1, 8, 8)
    expanded = d.expand([2, 3])
    assert expanded.batch_shape == (2, 3)
    assert expanded.temperature == 0.7
    assert expanded.sample([4]).shape == (4, 2, 3, 1, 8, 8)
    x = torch.rand(3, 1, 8, 8)
    log_p = expanded.log_prob(x)
    assert log_p.shape == (2, 3)
    torch.testing.assert_close(log_p, model.log_prob(x).expand(2, 3))
    sample = d.rsample([2])
    assert sample.requires_grad  # differentiable in the parameters


def test_poutine_trace_and_predictive_run():
    model = trained_like((1, 8, 8), 2)
    x = torch.rand(3, 1, 8, 8)
    trace = poutine.trace(model.model).get_trace(x)
    site = trace.nodes["x"]
    assert isinstance(site["fn"], MultiscaleGlowDistribution)
    assert site["fn"].batch_shape == (3,)
    assert site["is_observed"]
    torch.testing.assert_close(trace.log_prob_sum(), model.log_prob(x).sum())
    assert [n for n, s in trace.nodes.items() if s["type"] == "param"]  # registered
    unobserved = poutine.trace(poutine.uncondition(model.model)).get_trace(x)
    assert unobserved.nodes["x"]["value"].shape == (3, 1, 8, 8)
    assert not torch.equal(unobserved.nodes["x"]["value"], x)
    draws = Predictive(poutine.uncondition(model.model), num_samples=2, parallel=True)(x)
    assert draws["x"].shape == (2, 3, 1, 8, 8)
    assert torch.isfinite(draws["x"]).all()


def test_fit_trains_it_on_fashion_mnist():
    model = Glow((1, 28, 28), levels=2, depth=2, hidden_channels=16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = fit(model, fashion_pixels(64), "all", epochs=8, batch_size=16, progress=False)
    bpd = [row["train_bpd"] for row in history]
    assert len(bpd) == 8
    assert all(math.isfinite(b) for b in bpd)
    assert bpd[-1] < bpd[0] - 0.2, bpd
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())  # the phase restored them
    assert pyro.get_param_store().keys() == set()  # fit trained in its own param-store scope


def test_the_prior_scales_have_a_floor():
    model = Glow((1, 4, 4), 1, **TINY, min_scale=0.01)
    with torch.no_grad():
        model.top.log_scale.fill_(-50.0)
    _, log_scale = model.top(torch.zeros(2, *model.latent_shapes[-1]))
    torch.testing.assert_close(log_scale, torch.full_like(log_scale, math.log(0.01)))
    with pytest.raises(ValueError, match="min_scale"):
        Glow((1, 4, 4), 1, **TINY, min_scale=0.0)
