"""Per-datum ELBO, importance-sampled log p(x) and bits/dim, against an exact linear Gaussian."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vaeflow.infer import (
    ImportanceDiagnostics,
    LogWeightAccumulator,
    bits_per_dim,
    elbo,
    log_likelihood,
)

LATENT, OBSERVED, DATA, SIGMA = 2, 3, 5, 0.7


class LinearGaussian:
    r"""z ~ N(0, I), x | z ~ N(Az + b, σ² I), N data in a plate over dim 0.

    The marginal is N(b, AAᵀ + σ²I); the posterior is N(Σ Aᵀ(x − b) / σ², Σ) with
    Σ = (I + AᵀA / σ²)⁻¹.
    """

    def __init__(self) -> None:
        self.A = torch.randn(OBSERVED, LATENT)
        self.b = torch.randn(OBSERVED)
        z = torch.randn(DATA, LATENT)
        self.x = z @ self.A.T + self.b + SIGMA * torch.randn(DATA, OBSERVED)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.A.T + self.b, SIGMA).to_event(1), obs=x)

    def model_with_feature_plate(self, x: torch.Tensor) -> None:
        """The same joint, with the observed coordinates in an inner plate."""
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            with pyro.plate("features", OBSERVED, dim=-1):
                loc = (z @ self.A.T + self.b).squeeze(-2)  # [..., N, 1, D] -> [..., N, D]
                pyro.sample("x", dist.Normal(loc, SIGMA), obs=x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        precision = torch.eye(LATENT) + self.A.T @ self.A / SIGMA**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.A @ cov / SIGMA**2
        return dist.MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(cov))

    def exact_guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def exact_guide_at_dim_2(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", self.posterior(x.unsqueeze(-2)))

    def prior_guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))

    def log_px(self) -> torch.Tensor:
        cov = self.A @ self.A.T + SIGMA**2 * torch.eye(OBSERVED)
        return dist.MultivariateNormal(self.b, cov).log_prob(self.x)

    def prior_elbo(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The exact ELBO under the prior guide, E[log p(x | z)], and Var[log p(x | z)].

        With r = x − b − Az ~ N(μ = x − b, Σ = AAᵀ): E[rᵀr] = μᵀμ + tr Σ and
        Var[rᵀr] = 2 tr Σ² + 4 μᵀΣμ.
        """
        mu, cov = self.x - self.b, self.A @ self.A.T
        constant = -0.5 * OBSERVED * math.log(2 * math.pi * SIGMA**2)
        mean = constant - ((mu**2).sum(-1) + cov.trace()) / (2 * SIGMA**2)
        var = (2 * (cov @ cov).trace() + 4 * ((mu @ cov) * mu).sum(-1)) / (4 * SIGMA**4)
        return mean, var


@pytest.fixture
def lg(float64) -> LinearGaussian:
    return LinearGaussian()


# (a) The exact posterior as guide: every log-weight is log p(x).


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "loop"])
def test_exact_guide_gives_the_exact_marginal(lg, vectorize):
    exact = lg.log_px()
    bound = elbo(lg.model, lg.exact_guide, lg.x, num_particles=7, vectorize=vectorize)
    estimate = log_likelihood(
        lg.model, lg.exact_guide, lg.x, num_samples=13, chunk_size=5, vectorize=vectorize
    )
    assert bound.shape == estimate.shape == (DATA,)
    torch.testing.assert_close(bound, exact)
    torch.testing.assert_close(estimate, exact)


def test_exact_guide_diagnostics(lg):
    result = log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=50, return_diagnostics=True)
    assert isinstance(result, ImportanceDiagnostics)
    torch.testing.assert_close(result.log_px, lg.log_px())
    torch.testing.assert_close(result.ess, torch.full((DATA,), 50.0))
    torch.testing.assert_close(result.stderr, torch.zeros(DATA), atol=1e-6, rtol=0)


def test_an_inner_plate_is_summed_over(lg):
    model, exact = lg.model_with_feature_plate, lg.log_px()
    guide = lg.exact_guide_at_dim_2
    torch.testing.assert_close(elbo(model, guide, lg.x, num_particles=3), exact)
    named = log_likelihood(model, guide, lg.x, num_samples=4, plate_name="data")
    torch.testing.assert_close(named, exact)


def test_scale_is_respected(lg):
    scaled = elbo(poutine.scale(lg.model, 2.0), poutine.scale(lg.exact_guide, 2.0), lg.x)
    torch.testing.assert_close(scaled, 2 * lg.log_px())


# (b) A poor guide (the prior): ELBO < log p(x), and many samples bring the estimate close.


def test_poor_guide_elbo_is_below_and_importance_sampling_approaches(lg):
    exact = lg.log_px()
    true_elbo, elbo_var = lg.prior_elbo()
    assert (true_elbo < exact - 0.5).all()

    k = 20000
    bound = elbo(lg.model, lg.prior_guide, lg.x, num_particles=k)
    assert (bound - true_elbo).abs().le(4 * (elbo_var / k).sqrt()).all()
    assert (bound < exact).all()

    result = log_likelihood(
        lg.model, lg.prior_guide, lg.x, num_samples=k, chunk_size=5000, return_diagnostics=True
    )
    error = (result.log_px - exact).abs()
    assert (result.ess > 20).all()
    assert (result.ess < k).all()
    assert (error < 4 * result.stderr).all(), (error, result.stderr)
    assert (error < (bound - exact).abs()).all()


# (c) Chunking does not change the draws; (d) the loop agrees in distribution.


def test_chunked_equals_unchunked_with_a_fixed_seed(lg):
    # The chunks draw the same normals as one big draw when each chunk's draw is a multiple of
    # torch's vectorised block (16 numbers: 1000 × 5 × 2 is); other sizes agree statistically.
    results = []
    for chunk_size in (None, 1000, 999):
        pyro.set_rng_seed(1)
        results.append(
            log_likelihood(
                lg.model,
                lg.prior_guide,
                lg.x,
                num_samples=3000,
                chunk_size=chunk_size,
                return_diagnostics=True,
                progress=False,
            )
        )
    whole, same, other = results
    for got, expected in zip(same, whole, strict=True):
        torch.testing.assert_close(got, expected)
    assert (
        (other.log_px - whole.log_px).abs() < 4 * (other.stderr**2 + whole.stderr**2).sqrt()
    ).all()


def test_loop_agrees_with_vectorized(lg):
    exact = lg.log_px()
    loop = log_likelihood(
        lg.model, lg.prior_guide, lg.x, num_samples=400, vectorize=False, return_diagnostics=True
    )
    assert ((loop.log_px - exact).abs() < 4 * loop.stderr + 0.05).all()

    true_elbo, elbo_var = lg.prior_elbo()
    bound = elbo(lg.model, lg.prior_guide, lg.x, num_particles=400, vectorize=False)
    assert ((bound - true_elbo).abs() < 4 * (elbo_var / 400).sqrt()).all()


# The streaming log-sum-exp and the diagnostics' formulas.


def test_accumulator_matches_direct_formulas(float64):
    log_w = torch.randn(1000, 4) * 3 + torch.tensor([0.0, -1000.0, 800.0, 5.0])
    log_w[:400, 3] = -math.inf  # a datum whose first chunks have zero weight
    accumulator = LogWeightAccumulator()
    for chunk in log_w.split(128):
        accumulator.update(chunk)
    result = accumulator.summary()

    k = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(k)
    normalised = (log_w - log_mean).exp()
    torch.testing.assert_close(result.log_px, log_mean)
    torch.testing.assert_close(result.ess, normalised.sum(0) ** 2 / (normalised**2).sum(0))
    torch.testing.assert_close(result.stderr, normalised.std(0) / math.sqrt(k))


def test_accumulator_edge_cases(float64):
    accumulator = LogWeightAccumulator()
    with pytest.raises(ValueError, match="no log-weights"):
        accumulator.summary()
    with pytest.raises(ValueError, match=r"shape \[k >= 1, N\]"):
        accumulator.update(torch.zeros(3))
    accumulator.update(torch.tensor([[-math.inf, 0.0, math.nan]]))
    result = accumulator.summary()
    assert result.log_px[0] == -math.inf
    assert result.log_px[1] == 0.0
    assert result.log_px[2].isnan()
    assert result.stderr.isnan().all()


def test_nan_is_not_hidden(lg):
    x = lg.x.clone()
    x[2, 0] = math.nan
    with pyro.validation_enabled(False):
        estimate = log_likelihood(lg.model, lg.exact_guide, x, num_samples=8)
        bound = elbo(lg.model, lg.exact_guide, x)
    for value in (estimate, bound):
        assert value[2].isnan()
        torch.testing.assert_close(value[[0, 1, 3, 4]], lg.log_px()[[0, 1, 3, 4]])


def test_gradients_are_off_by_default(lg):
    def guide(x):
        shift = pyro.param("shift", torch.zeros(LATENT))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(shift, 1.0).to_event(1))

    assert not log_likelihood(lg.model, guide, lg.x, num_samples=3).requires_grad
    estimate = log_likelihood(lg.model, guide, lg.x, num_samples=3, enable_grad=True)
    estimate.sum().backward()
    assert pyro.param("shift").grad is not None
    assert elbo(lg.model, guide, lg.x, enable_grad=True).requires_grad


def test_progress_bar_only_with_several_chunks(lg, capsys):
    log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=10, chunk_size=10)
    assert capsys.readouterr().err == ""
    log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=10, chunk_size=3, progress=False)
    assert capsys.readouterr().err == ""
    log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=10, chunk_size=3)
    assert "log_likelihood" in capsys.readouterr().err


# (e) Bits per dimension.


def test_bits_per_dim_arithmetic():
    dims = 3 * 8 * 8
    assert bits_per_dim(0.0, dims) == 8.0
    assert bits_per_dim(0.0, dims, n_bits=5) == 5.0
    assert bits_per_dim(dims * math.log(2), dims) == pytest.approx(7.0)
    log_px = torch.tensor([-1000.0, 250.0])
    expected = 8 - log_px / (dims * math.log(2))
    torch.testing.assert_close(bits_per_dim(log_px, dims), expected)


@pytest.mark.parametrize(
    ("num_dims", "n_bits", "message"),
    [(0, 8, "num_dims"), (-3, 8, "num_dims"), (2.5, 8, "num_dims"), (4, 0, "n_bits")],
)
def test_bits_per_dim_rejects_bad_input(num_dims, n_bits, message):
    with pytest.raises(ValueError, match=message):
        bits_per_dim(torch.zeros(2), num_dims, n_bits)


# (f) Errors.


@pytest.mark.parametrize(
    "call",
    [
        lambda lg: log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=0),
        lambda lg: log_likelihood(lg.model, lg.exact_guide, lg.x, num_samples=2.0),
        lambda lg: log_likelihood(lg.model, lg.exact_guide, lg.x, chunk_size=0),
        lambda lg: elbo(lg.model, lg.exact_guide, lg.x, num_particles=0),
    ],
    ids=["num_samples=0", "num_samples=2.0", "chunk_size=0", "num_particles=0"],
)
def test_bad_sample_counts(lg, call):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        call(lg)


def test_a_model_without_observed_sites():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observed sites"):
        elbo(model, model)


def test_a_global_latent_is_rejected():
    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    def guide(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="latent site 'w' lies outside the data plate"):
        log_likelihood(model, guide, torch.zeros(4), num_samples=2)


def test_unplated_data_is_rejected():
    def model(x):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([len(x)]).to_event(1), obs=x)

    with pytest.raises(ValueError, match=r"lie in no pyro\.plate"):
        elbo(model, lambda x: None, torch.zeros(4))


def test_unknown_and_ambiguous_plates(lg):
    with pytest.raises(ValueError, match="no observed site lies in a plate named 'batch'"):
        elbo(lg.model, lg.exact_guide, lg.x, plate_name="batch")

    def two_plates(x):
        with pyro.plate("a", len(x)):
            pyro.sample("x1", dist.Normal(0.0, 1.0), obs=x)
        with pyro.plate("b", len(x)):
            pyro.sample("x2", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="several plates at dim -1"):
        elbo(two_plates, lambda x: None, torch.zeros(4))


def test_inconsistent_data_size_is_rejected():
    def model(x, size):
        with pyro.plate("data", size):
            pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="needs size 4 at dim -1"):
        elbo(model, lambda x, size: None, torch.zeros(1, 2), 4)


def test_subsampling_and_guide_mismatch_are_rejected(lg):
    def subsampled(x):
        with pyro.plate("data", len(x), subsample_size=2) as index:
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x[index])

    with pytest.raises(ValueError, match="subsamples 2 of 4"):
        elbo(subsampled, lambda x: None, torch.zeros(4))
    with pytest.raises(ValueError, match=r"latent in the model only: \['z'\]"):
        elbo(lg.model, lambda x: None, lg.x)

    def guide_with_a_factor(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", lg.posterior(x))
            pyro.factor("penalty", torch.zeros(x.shape[0]))

    with pytest.raises(ValueError, match=r"guide has observed sites \['penalty'\]"):
        elbo(lg.model, guide_with_a_factor, lg.x)
