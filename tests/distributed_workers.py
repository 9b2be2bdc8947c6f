"""What each process of ``test_distributed.py`` runs (an importable module, as the spawned
processes need), and what the single-process side of each comparison runs."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.distributed
from pyro.infer import Trace_ELBO
from torch import Tensor

from pyro_vaeflow.data import load_images
from pyro_vaeflow.distributed import local, shard
from pyro_vaeflow.models import Glow, VAEFlow
from pyro_vaeflow.presets import Preset, override
from pyro_vaeflow.run import evaluate, fid_scores
from pyro_vaeflow.training import DataParallelSVI, MultiTensorAdam, fit, phase
from tests.helpers import TINY

STEPS = {"batch_size": 8, "epochs": 1, "lr": 1e-5, "progress": False}
"""Three steps of a global batch of 8 on 24 images (a small rate: Adam's normalisation turns
the rounding of a near-zero gradient, summed in another order, into a visible difference)."""

GLOW_PRESET = Preset(
    "glow-test",
    "a tiny standalone Glow",
    "fashion-mnist",
    (1, 28, 28),
    {"levels": 2, "depth": 1, "hidden_channels": 4},
    architecture="glow",
    epochs={"all": 1},
    elbo_images=6,
    is_images=3,
    is_samples=1,
)


class FixedNoiseVAEFlow(VAEFlow):
    """A VAEFlow whose guide's noise is a fixed function of the image, so that one process and
    several draw the same latents: :math:`z = \\mu + \\sigma \\epsilon(x)`, with its density."""

    architecture = "test-fixed-noise-vaeflow"

    def guide(self, x: Tensor) -> None:
        self.check_images(x)
        self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            eps = torch.sin(1000.0 * x.flatten(-3)[..., : self.latent_dim])
            z = loc + scale * eps
            log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
            pyro.sample("z", dist.Delta(z, log_density=log_q, event_dim=1))


def float_images() -> Tensor:
    """24 real Fashion-MNIST images in float64, dequantised once (no noise left to draw)."""
    pixels = load_images("fashion-mnist", "test")[:24].double()
    return (pixels + 0.5) / 256.0


def build(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if case == "glow":
        return Glow((1, 28, 28), levels=2, depth=1, hidden_channels=4).double()
    model = FixedNoiseVAEFlow((1, 28, 28), 4, **TINY).double()
    with torch.no_grad():  # an identity Glow layer would get no gradient in its conditioners
        for parameter in model.glow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


CASES = {"glow": "all", "vae": "vae", "glow-layer": "glow", "joint": "joint"}
"""Case name → the phase it trains."""


def gradients(case: str) -> dict[str, Tensor]:
    """The gradient of the loss of the first global batch of ``case``'s phase (this rank's
    share of it under a process group)."""
    model, x = build(case), float_images()[:8]
    elbo = Trace_ELBO()
    with pyro.get_param_store().scope(), phase(model, CASES[case]):
        if torch.distributed.is_initialized():
            svi = DataParallelSVI(model.model, model.guide, MultiTensorAdam(), elbo, model)
            svi.loss_and_grads(model.model, model.guide, shard(x))
        else:
            elbo.loss_and_grads(model.model, model.guide, x)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def trained(case: str) -> dict[str, Tensor]:
    """The weights after three steps of ``case``'s phase, in whatever process runs it."""
    model = build(case)
    fit(model, float_images(), CASES[case], **STEPS)
    return model.state_dict()


class _NanOnOneRank(torch.nn.Module):
    """A model whose loss is NaN on rank 1 at its first step only."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Linear(1, 1)
        self.calls = 0

    def model(self, x: Tensor) -> None:
        pyro.module("loc", self.loc)
        self.calls += 1
        bad = self.calls == 1 and torch.distributed.get_rank() == 1
        with pyro.plate("data", len(x)):
            loc = self.loc(x) + (float("nan") if bad else 0.0)
            pyro.sample("y", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        pass


def _prior_with_early_stopping() -> dict:
    """The prior phase, with its validation split and early stopping, and 5 validation images
    in the last batch (an uneven share per rank)."""
    model = build("vae")
    history = fit(
        model,
        float_images(),
        "prior",
        epochs=4,
        batch_size=8,
        lr=0.5,
        patience=1,
        val_fraction=0.2,
        progress=False,
    )
    return {"history": history, "weights": model.state_dict()}


def worker(rank: int, world: int, port: int, out: str) -> None:
    """Every check that needs several processes, on one rank; results saved under ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results: dict = {case: trained(case) for case in CASES}
    results["gradients"] = {case: gradients(case) for case in CASES}
    model = _NanOnOneRank()
    with pyro.get_param_store().scope():
        svi = DataParallelSVI(
            model.model, model.guide, MultiTensorAdam(lr=0.1), Trace_ELBO(), model
        )
        x = torch.ones(2, 1)
        first = svi.step(x)
        after_skip = {n: p.detach().clone() for n, p in model.named_parameters()}
        svi.step(x)
    results["nan"] = {"first": first, "skipped": svi.skipped, "after_skip": after_skip}
    results["evaluation"] = evaluate(build("glow"), GLOW_PRESET, fid=False, progress=False)
    results["prior"] = _prior_with_early_stopping()
    budget = 1e9 if rank == 0 else 0.0  # rank 0's clock decides for every rank
    results["budget"] = fit(
        build("glow"), float_images(), "all", **{**STEPS, "time_budget": budget}
    )
    if rank == 0:  # one rank alone, as the figures and the sample grid are drawn
        with local():
            results["alone"] = Glow((1, 28, 28), levels=2, depth=1, hidden_channels=4).sample(2)
    torch.distributed.barrier()
    try:
        fit(build("glow"), float_images(), "all", **{**STEPS, "batch_size": 7})
    except ValueError as error:
        results["indivisible"] = str(error)
    fid_preset = override(GLOW_PRESET, fid_samples=6, temperature=0.7)
    results["fid"] = fid_scores(build("glow"), fid_preset, cache_dir=out, progress=False)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    gc.collect()  # as distributed.process_group does: nothing holds gloo's work at exit
    torch.distributed.destroy_process_group()
