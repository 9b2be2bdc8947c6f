"""Per-datum ELBO and log p(x) for the guides Pyro users write: autoguides, auxiliary sites,
discrete latents enumerated in the model, against exact values and Pyro's own ELBOs."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, autoguide, config_enumerate
from pyro.infer.autoguide import init_to_value

from pyro_vaeflow.infer import elbo, log_likelihood
from pyro_vaeflow.infer import marginal as marginal_module
from pyro_vaeflow.infer.marginal import default_chunk_size

DATA = 5
# Two independent latents with Gaussian posteriors of variance 1/2 (in z2's log): z1 ~ N(0, 1),
# x1 | z1 ~ N(z1, 1); z2 ~ LogNormal(0, 1), x2 | z2 ~ LogNormal(log z2, 1).
POSTERIOR_SCALE = 0.5**0.5


def two_latents(x1: torch.Tensor, x2: torch.Tensor) -> None:
    with pyro.plate("data", len(x1)):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.LogNormal(0.0, 1.0))
        pyro.sample("x1", dist.Normal(z1, 1.0), obs=x1)
        pyro.sample("x2", dist.LogNormal(z2.log(), 1.0), obs=x2)


def posterior_means(x1, x2) -> dict[str, torch.Tensor]:
    """The posterior mean of z1 and median of z2: the guides' initial values."""
    return {"z1": x1 / 2, "z2": (x2.log() / 2).exp()}


def log_marginals(x1, x2) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x1) = log N(x1; 0, 2) and log p(x2) = log N(log x2; 0, 2) − log x2."""
    normal = dist.Normal(0.0, 2**0.5)
    return normal.log_prob(x1), normal.log_prob(x2.log()) - x2.log()


def log_joint_at_means(x1, x2) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x1, z1*) and log p(x2, z2*) at the posterior means."""
    z = posterior_means(x1, x2)
    first = dist.Normal(0.0, 1.0).log_prob(z["z1"]) + dist.Normal(z["z1"], 1.0).log_prob(x1)
    second = dist.LogNormal(0.0, 1.0).log_prob(z["z2"])
    return first, second + dist.LogNormal(z["z2"].log(), 1.0).log_prob(x2)


def auto_normal(x1, x2):
    init = init_to_value(values=posterior_means(x1, x2))
    return autoguide.AutoNormal(two_latents, init_loc_fn=init, init_scale=POSTERIOR_SCALE)


def auto_delta(x1, x2):
    return autoguide.AutoDelta(
        two_latents, init_loc_fn=init_to_value(values=posterior_means(x1, x2))
    )


def auto_guide_list(x1, x2):
    init = init_to_value(values=posterior_means(x1, x2))
    guide = autoguide.AutoGuideList(two_latents)
    guide.append(autoguide.AutoDelta(poutine.block(two_latents, expose=["z1"]), init_loc_fn=init))
    hidden = poutine.block(two_latents, hide=["z1"])
    guide.append(autoguide.AutoNormal(hidden, init_loc_fn=init, init_scale=POSTERIOR_SCALE))
    return guide


def auxiliary_guide(x1, x2, scale=POSTERIOR_SCALE):
    """N(mean, scale²) for z1 and log z2 as a change of variables of auxiliary standard normals,
    as AutoNormal does it: z = T(u), with the Delta's log_density = −log |T'(u)|. With the
    default scale, the exact posterior."""

    def guide(x1, x2):
        means = posterior_means(x1, x2)
        with pyro.plate("data", len(x1)):
            aux = {"is_auxiliary": True}
            u1 = pyro.sample("u1", dist.Normal(0.0, 1.0), infer=aux)
            u2 = pyro.sample("u2", dist.Normal(0.0, 1.0), infer=aux)
            log_scale = math.log(scale)
            pyro.sample("z1", dist.Delta(means["z1"] + scale * u1, -log_scale))
            w2 = means["z2"].log() + scale * u2
            pyro.sample("z2", dist.Delta(w2.exp(), -log_scale - w2))

    return guide


def exact_per_datum(name, x1, x2):
    """Each guide's every log-weight: exact where the guide is the posterior, else log p(x, z*)."""
    marginal1, marginal2 = log_marginals(x1, x2)
    joint1, joint2 = log_joint_at_means(x1, x2)
    return {
        "AutoNormal": marginal1 + marginal2,
        "auxiliary": marginal1 + marginal2,
        "AutoDelta": joint1 + joint2,
        "AutoGuideList": joint1 + marginal2,
    }[name]


GUIDES = {
    "AutoNormal": auto_normal,
    "AutoDelta": auto_delta,
    "AutoGuideList": auto_guide_list,
    "auxiliary": auxiliary_guide,
}


@pytest.fixture
def data(float64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(DATA), torch.randn(DATA).exp()


# Autoguides and auxiliary sites: each log-weight is exact (q is the posterior, or a point).


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize("name", GUIDES)
def test_guides_with_auxiliary_sites_give_exact_values(data, name, vectorize):
    guide, exact = GUIDES[name](*data), exact_per_datum(name, *data)
    bound = elbo(two_latents, guide, *data, num_particles=4, vectorize=vectorize)
    estimate = log_likelihood(two_latents, guide, *data, num_samples=6, vectorize=vectorize)
    torch.testing.assert_close(bound, exact)
    torch.testing.assert_close(estimate, exact)
    # Pyro's Trace_ELBO counts every guide site, auxiliary ones included, in log q.
    loss = Trace_ELBO(num_particles=4).loss(two_latents, guide, *data)
    assert bound.sum().item() == pytest.approx(-loss, rel=1e-9)


@pytest.mark.parametrize(
    "make_guide",
    [
        lambda x1, x2: autoguide.AutoNormal(two_latents),
        lambda x1, x2: auxiliary_guide(x1, x2, scale=1.3),
    ],
    ids=["AutoNormal", "auxiliary"],
)
def test_elbo_sums_to_trace_elbo_with_the_same_draws(data, make_guide):
    # Guides away from the posterior. Both first trace the guide and the model once (Pyro to
    # guess max_plate_nesting, we to inspect the model), then draw the particles in one trace
    # under a particle plate at dim -2, so the random draws coincide.
    guide = make_guide(*data)
    guide(*data)  # AutoNormal sets itself up, drawing from the prior, before the comparison
    pyro.set_rng_seed(3)
    bound = elbo(two_latents, guide, *data, num_particles=50)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO(num_particles=50, vectorize_particles=True).loss(two_latents, guide, *data)
    assert bound.sum().item() == pytest.approx(-loss, rel=1e-9)
    pyro.set_rng_seed(4)  # other draws: a different estimate, so the comparison can fail
    assert elbo(two_latents, guide, *data, num_particles=50).sum().item() != pytest.approx(
        -loss, rel=1e-9
    )


# Discrete latents enumerated in the model: a label y ~ Categorical(π), z ~ N(0, 1) and
# x | y, z ~ N(μ_y + z, σ²), so that p(x) = Σ_y π_y N(x; μ_y, 1 + σ²).

PI = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
MU, NOISE = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64), 0.5


def labelled(x, y=None):
    """y is observed where given, else enumerated (Pyro's semi-supervised VAE)."""
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(PI), obs=y, infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(MU[label] + z, NOISE), obs=x)


@config_enumerate
def partly_labelled(x, y, mask):
    """y observed where mask is true and enumerated elsewhere, in one batch (obs_mask)."""
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(PI), obs=y, obs_mask=mask)
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(MU[label] + z, NOISE), obs=x)


def z_guide(x, *labels):
    """q(z | x) = N(x / 4, 0.8²): the guide samples only z."""
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 4, 0.8))


def exact_labelled(x, y=None, mask=None):
    joint = PI.log()[:, None] + dist.Normal(MU[:, None], (1 + NOISE**2) ** 0.5).log_prob(x)
    marginal = joint.logsumexp(0)
    if y is None:
        return marginal
    observed = joint.gather(0, y[None])[0]
    return observed if mask is None else torch.where(mask, observed, marginal)


def hand_written_estimate(x, num_samples, y=None, mask=None):
    """log p̂(x) and its standard error, the label summed in closed form per sample."""
    q = dist.Normal(x / 4, 0.8)
    z = q.sample([num_samples])  # [K, N]
    log_joint = (
        PI.log()[:, None, None]
        + dist.Normal(0.0, 1.0).log_prob(z)
        + dist.Normal(MU[:, None, None] + z, NOISE).log_prob(x)
    )  # [classes, K, N]
    summed = log_joint.logsumexp(0)
    if y is not None:
        given = log_joint.gather(0, y.expand(1, num_samples, -1))[0]
        summed = given if mask is None else torch.where(mask, given, summed)
    log_w = summed - q.log_prob(z)
    log_px = log_w.logsumexp(0) - math.log(num_samples)
    normalised = (log_w - log_px).exp()
    return log_px, normalised.std(0) / num_samples**0.5


CASES = ["unlabelled", "labelled", "obs_mask"]


def mixture_case(case, x, y, mask):
    """The model, its arguments, and the labels it is given (for the exact and hand-written
    values)."""
    if case == "unlabelled":
        return labelled, (x,), {}
    if case == "labelled":
        return labelled, (x, y), {"y": y}
    return partly_labelled, (x, y, mask), {"y": y, "mask": mask}


@pytest.fixture
def mixture_data(float64):
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    x = MU[y] + (1 + NOISE**2) ** 0.5 * torch.randn(len(y))
    return x, y, torch.tensor([True, False, True, False, False, True])


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize("case", CASES)
def test_enumerated_label_elbo_sums_to_trace_enum_elbo(mixture_data, case, vectorize):
    # Both first trace the guide and the model once (TraceEnum_ELBO to guess max_plate_nesting,
    # we to inspect the model) and then draw the same particles: the estimates coincide.
    model, args, _ = mixture_case(case, *mixture_data)
    k = 40 if vectorize else 10
    pyro.set_rng_seed(5)
    bound = elbo(model, z_guide, *args, num_particles=k, vectorize=vectorize)
    pyro.set_rng_seed(5)
    pyro_elbo = TraceEnum_ELBO(num_particles=k, vectorize_particles=vectorize)
    loss = pyro_elbo.loss(model, z_guide, *args)
    assert bound.shape == (len(mixture_data[0]),)
    assert bound.sum().item() == pytest.approx(-loss, rel=1e-9)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize("case", CASES)
def test_enumerated_label_log_likelihood_matches_a_hand_written_estimate(
    mixture_data, case, vectorize
):
    model, args, given = mixture_case(case, *mixture_data)
    k = 4000 if vectorize else 150
    ours = log_likelihood(
        model, z_guide, *args, num_samples=k, vectorize=vectorize, return_diagnostics=True
    )
    theirs, stderr = hand_written_estimate(mixture_data[0], 4000, **given)
    exact = exact_labelled(mixture_data[0], **given)
    tolerance = 4 * (ours.stderr**2 + stderr**2).sqrt()
    assert ((ours.log_px - theirs).abs() < tolerance).all(), (ours.log_px, theirs, tolerance)
    assert ((ours.log_px - exact).abs() < 4 * ours.stderr + 1e-3).all()
    assert ((theirs - exact).abs() < 4 * stderr + 1e-3).all()


# Only discrete latents: the guide samples nothing, and every log-weight is exact.

PI1 = torch.tensor([0.4, 0.6], dtype=torch.float64)
PI2 = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
CENTRES = torch.linspace(-3.0, 3.0, 2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)


def two_labels(x):
    """y1, y2 enumerated per datum; x's 4 coordinates in an inner plate depend on both."""
    with pyro.plate("data", len(x), dim=-2):
        y1 = pyro.sample("y1", dist.Categorical(PI1))
        y2 = pyro.sample("y2", dist.Categorical(PI2))
        with pyro.plate("features", 4, dim=-1):
            loc = CENTRES[y1, y2].squeeze(-2)  # [..., N, 1, 4] -> [..., N, 4]
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def exact_two_labels(x):
    log_prior = PI1.log()[:, None] + PI2.log()  # [2, 3]
    log_lik = dist.Normal(CENTRES[:, :, None, :], 1.0).log_prob(x).sum(-1)  # [2, 3, N]
    return (log_prior[:, :, None] + log_lik).flatten(0, 1).logsumexp(0)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
@pytest.mark.parametrize(
    ("model", "sampled"),
    [
        (config_enumerate(two_labels), False),
        (two_labels, True),
        (config_enumerate(two_labels), True),
    ],
    ids=["enumerated", "guide samples", "guide samples, model marked"],
)
def test_discrete_latents_enumerated_or_sampled_in_the_guide(float64, model, sampled, vectorize):
    x = CENTRES[torch.tensor([0, 1, 1, 0, 1]), torch.tensor([2, 0, 1, 1, 2])]
    x = x + torch.randn_like(x)
    exact = exact_two_labels(x)

    def posterior_guide(x):
        """The exact posterior p(y1, y2 | x), sampled as y1 then y2 | y1."""
        log_joint = (
            PI1.log()[:, None, None]
            + PI2.log()[:, None]
            + dist.Normal(CENTRES[:, :, None, :], 1.0).log_prob(x).sum(-1)
        )  # [2, 3, N]
        with pyro.plate("data", len(x), dim=-2):
            y1 = pyro.sample("y1", dist.Categorical(logits=log_joint.logsumexp(1).T[:, None]))
            logits = log_joint.permute(2, 0, 1)[torch.arange(len(x))[:, None], y1]
            pyro.sample("y2", dist.Categorical(logits=logits))

    guide = posterior_guide if sampled else (lambda x: None)
    bound = elbo(model, guide, x, num_particles=3, vectorize=vectorize)
    estimate = log_likelihood(model, guide, x, num_samples=4, vectorize=vectorize)
    torch.testing.assert_close(bound, exact)
    torch.testing.assert_close(estimate, exact)


def test_enumeration_respects_a_common_scale(float64):
    model = config_enumerate(two_labels)
    x = torch.randn(3, 4)
    exact = exact_two_labels(x)
    scaled = elbo(poutine.scale(model, 2.0), lambda x: None, x)
    torch.testing.assert_close(scaled, 2 * exact)

    def unevenly_scaled(x):  # the enumerated sites at scale 1, the observed site at 2
        with pyro.plate("data", len(x), dim=-2):
            y1 = pyro.sample("y1", dist.Categorical(PI1))
            y2 = pyro.sample("y2", dist.Categorical(PI2))
            with pyro.plate("features", 4, dim=-1), poutine.scale(scale=2.0):
                pyro.sample("x", dist.Normal(CENTRES[y1, y2].squeeze(-2), 1.0), obs=x)

    with pytest.raises(ValueError, match=r"must share one scalar poutine\.scale"):
        elbo(config_enumerate(unevenly_scaled), lambda x: None, x)


def enumerated_in_an_inner_plate(x):
    with pyro.plate("data", len(x), dim=-2), pyro.plate("features", 4, dim=-1):
        y = pyro.sample("y", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(y, 1.0), obs=x)


def enumerated_continuous(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(z, 1.0), obs=x[:, 0])


def enumerated_by_sampling(x):
    with pyro.plate("data", len(x)):
        infer = {"enumerate": "parallel", "num_samples": 10}
        y = pyro.sample("y", dist.Bernoulli(0.3), infer=infer)
        pyro.sample("x", dist.Normal(y, 1.0), obs=x[:, 0])


def enumerated_in_markov(x):
    with pyro.plate("data", len(x)):
        y = torch.zeros(len(x))
        for t in pyro.markov(range(2)):
            y = pyro.sample(f"y{t}", dist.Bernoulli(0.2 + 0.6 * y), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(y, 1.0), obs=x[:, 0])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (enumerated_in_an_inner_plate, r"site 'y' lies in the plates \['data', 'features'\]"),
        (enumerated_continuous, "'z' is marked for enumeration, but .* has no finite support"),
        (enumerated_by_sampling, "'y' draws num_samples values"),
        (enumerated_in_markov, "'y0' lies in pyro.markov"),
    ],
    ids=["inner plate", "continuous", "num_samples", "markov"],
)
def test_unsupported_enumeration_is_named(model, message):
    with pytest.raises(ValueError, match=message):
        log_likelihood(model, lambda x: None, torch.zeros(3, 4), num_samples=2)


# Guides whose latent cannot be split per datum.


def local_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


ALTERNATIVE = (
    "use AutoNormal or AutoDelta, which keep one latent per datum, or a hand-written guide in the "
    "data plate"
)


@pytest.mark.parametrize("query", [elbo, log_likelihood])
@pytest.mark.parametrize(
    "autoguide_class",
    [
        autoguide.AutoDiagonalNormal,
        autoguide.AutoMultivariateNormal,
        autoguide.AutoLowRankMultivariateNormal,
    ],
)
def test_joint_autoguides_are_refused_with_an_alternative(autoguide_class, query):
    guide = autoguide_class(local_model)
    name = f"_{autoguide_class.__name__}_latent"
    expected = f"the guide's auxiliary site '{name}' lies outside the data plate 'data'"
    with pytest.raises(ValueError, match=expected) as error:
        query(local_model, guide, torch.zeros(3))
    assert ALTERNATIVE in str(error.value)


def test_a_guide_latent_shared_by_the_data_is_refused_with_an_alternative():
    def shared_guide(x):  # one joint Normal over all data, in no plate
        pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0).to_event(1))

    with pytest.raises(ValueError, match="guide's latent site 'z' lies outside") as error:
        elbo(local_model, shared_guide, torch.zeros(3))
    assert ALTERNATIVE in str(error.value)


def test_a_model_latent_shared_by_the_data_names_an_alternative():
    def global_model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    with pytest.raises(ValueError, match="model's latent site 'w' lies outside") as error:
        elbo(global_model, autoguide.AutoNormal(global_model), torch.zeros(3))
    assert "poutine.condition(model, data={'w': value})" in str(error.value)


def test_a_guide_only_site_must_be_auxiliary():
    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("extra", dist.Normal(0.0, 1.0))
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"in the guide only: \['extra'\]"):
        elbo(local_model, guide, torch.zeros(3))


# A model that does not broadcast over the particle dim.


def reshaping_model(x):
    """Exact under the loop; under a particle plate, z is [K, N] and the reshapes break."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.view(len(x)), 1.0), obs=x)


def flattening_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.reshape(-1), 1.0), obs=x)


def posterior_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))


@pytest.mark.parametrize(
    ("model", "cause"),
    [(reshaping_model, RuntimeError), (flattening_model, ValueError)],
    ids=["view(len(x))", "reshape(-1)"],
)
@pytest.mark.parametrize("query", ["elbo", "log_likelihood"])
def test_a_model_that_does_not_broadcast_suggests_the_loop(float64, model, cause, query):
    x = torch.randn(3)
    function, count = (
        (elbo, "num_particles") if query == "elbo" else (log_likelihood, "num_samples")
    )
    with pytest.raises(ValueError, match="pass vectorize=False") as error:
        function(model, posterior_guide, x, **{count: 4})
    assert isinstance(error.value.__cause__, cause)
    looped = function(model, posterior_guide, x, **{count: 4}, vectorize=False)
    torch.testing.assert_close(looped, dist.Normal(0.0, 2**0.5).log_prob(x))


# The default chunk.


def test_default_chunk_size_bounds_the_observed_elements():
    assert default_chunk_size(25, 784) == 200_000 // (25 * 784) == 10
    assert default_chunk_size(1, 1) == 200_000
    assert default_chunk_size(10_000, 3 * 32 * 32) == 1


def test_log_likelihood_draws_default_chunks(float64, monkeypatch):
    def prior_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.randn(5)
    monkeypatch.setattr(marginal_module, "CHUNK_ELEMENTS", 10)  # 10 // (5 data × 1) = 2
    results = []
    for chunk_size in (None, 2, 7):
        pyro.set_rng_seed(2)
        results.append(
            log_likelihood(local_model, prior_guide, x, num_samples=7, chunk_size=chunk_size)
        )
    default, two, seven = results
    torch.testing.assert_close(default, two)
    assert not torch.allclose(default, seven)
