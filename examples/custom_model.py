r"""Using FlowDecoder in your own Pyro model, and querying its likelihoods.

A small VAE whose Gaussian decoder is pushed through an additive Glow flow (``FlowDecoder``),
with a Real NVP flow prior (``FlowPrior``), trained with SVI in the paper's two phases on real
Fashion-MNIST, sampled at a temperature, and then asked for each test image's ELBO and
importance-sampled log-likelihood (``pyro_vaeflow.infer``). The walkthrough in
``docs/tutorial.rst`` shows this file's code.

Usage::

    python examples/custom_model.py           # 200 + 100 SVI steps on 1024 images
    python examples/custom_model.py --smoke   # tiny sizes and 3 + 2 steps, a few seconds
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import Tensor, nn

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.transforms import glow, realnvp

IMAGE_SHAPE = (1, 28, 28)
IMAGE_SIZE = 28 * 28
# FlowVAE's sizes under --smoke.
SMOKE_SIZES = {
    "latent_dim": 4,
    "hidden_dim": 16,
    "depth": 1,
    "hidden_channels": 8,
    "prior_layers": 2,
    "prior_hidden": 16,
}


class Encoder(nn.Module):
    """An image ``[..., 1, 28, 28]`` → the mean and standard deviation of q(z | x)."""

    def __init__(self, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(-3),
            nn.Linear(IMAGE_SIZE, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 2 * latent_dim),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, pre_scale = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(pre_scale) + 1e-3


class Decoder(nn.Module):
    """A latent ``[..., D]`` → the mean and standard deviation of the base Gaussian over x̄.

    Both outputs have shape ``[..., 1, 28, 28]``. The mean is left unconstrained and the scale
    is ``softplus(h) + 1e-3``.
    """

    def __init__(self, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 2 * IMAGE_SIZE),
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        loc, pre_scale = self.net(z).unflatten(-1, (2, *IMAGE_SHAPE)).unbind(-4)
        return loc, F.softplus(pre_scale) + 1e-3


class FlowVAE(nn.Module):
    """The networks and flows of the model, with its Pyro ``model`` and ``guide``."""

    def __init__(
        self,
        latent_dim: int = 16,
        hidden_dim: int = 256,
        depth: int = 4,
        hidden_channels: int = 32,
        prior_layers: int = 4,
        prior_hidden: int = 128,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim, hidden_dim)
        self.decoder = Decoder(latent_dim, hidden_dim)
        # The decoder's flow f: base x̄ → image x. One squeeze gives the 1-channel image
        # 4 channels to couple; init="identity" makes f start as the exact identity.
        self.flow = glow(
            1, depth=depth, hidden_channels=hidden_channels, squeeze=1, init="identity"
        )
        # The prior's flow: a standard Normal on R^D → z.
        self.prior_flow = realnvp(
            latent_dim, num_layers=prior_layers, hidden_dims=(prior_hidden, prior_hidden)
        )

    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        pyro.module("flow", self.flow)
        pyro.module("prior_flow", self.prior_flow)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", FlowPrior(self.latent_dim, self.prior_flow))
            loc, scale = self.decoder(z)
            pyro.sample("x", FlowDecoder(loc, scale, self.flow), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        """Draw images: z from the prior, x̄ from the base Gaussian at ``temperature``, x = f(x̄)."""
        z = FlowPrior(self.latent_dim, self.prior_flow).expand([num_samples]).sample()
        loc, scale = self.decoder(z)
        return FlowDecoder(loc, scale, self.flow, temperature=temperature).sample()


def train_only(vae: FlowVAE, *parts: nn.Module) -> None:
    """Train ``parts`` of ``vae`` and freeze the rest.

    A frozen module is also put in ``eval()`` mode, so that ``pyro.module`` leaves its
    parameters out of the param store instead of warning about them.
    """
    vae.requires_grad_(False).eval()
    for part in parts:
        part.requires_grad_(True).train()


def train(svi: SVI, data: Tensor, steps: int, batch_size: int, log_every: int) -> None:
    """Take ``steps`` SVI steps on random minibatches, printing the loss now and then."""
    for step in range(1, steps + 1):
        batch = data[torch.randint(len(data), (batch_size,))]
        loss = svi.step(batch) / batch_size
        if step % log_every == 0 or step == steps:
            print(f"  step {step:4d}  loss {loss:10.2f} nats/image")


def main(args: argparse.Namespace) -> dict:
    """Train the model in two phases, sample from it, and return its test bits/dim."""
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    if args.smoke:
        sizes = SMOKE_SIZES
        num_data, args.steps, args.flow_steps, args.batch_size = 16, 3, 2, 8
        args.test_images, args.num_samples = 4, 4
    else:
        sizes, num_data = {}, 1024
    log_every = max(1, args.steps // 10)

    # Real Fashion-MNIST pixels, dequantised to [0, 1): x = (pixel + u) / 256.
    data = dequantize(load_images("fashion-mnist", "train")[:num_data])
    test = dequantize(load_images("fashion-mnist", "test")[: args.test_images])
    vae = FlowVAE(**sizes)

    print(f"phase 1: the VAE and its flow prior, f fixed at the identity ({args.steps} steps)")
    train_only(vae, vae.encoder, vae.decoder, vae.prior_flow)
    svi = SVI(vae.model, vae.guide, Adam({"lr": args.lr}), Trace_ELBO())
    train(svi, data, args.steps, args.batch_size, log_every)

    print(f"phase 2: the decoder's flow f alone ({args.flow_steps} steps)")
    train_only(vae, vae.flow)
    svi = SVI(vae.model, vae.guide, Adam({"lr": args.lr}), Trace_ELBO())
    train(svi, data, args.flow_steps, args.batch_size, log_every)

    samples = vae.sample(16, temperature=args.temperature)
    print(f"samples at T={args.temperature}: shape {tuple(samples.shape)}")

    # Per-image queries, for any Pyro model whose data sit in a plate: nats per test image.
    bound = elbo(vae.model, vae.guide, test)
    log_px = log_likelihood(vae.model, vae.guide, test, num_samples=args.num_samples)
    result = {
        "elbo_bpd": float(bits_per_dim(bound.mean(), IMAGE_SIZE)),
        "is_bpd": float(bits_per_dim(log_px.mean(), IMAGE_SIZE)),
    }
    print(
        f"test ELBO: {result['elbo_bpd']:.3f} bits/dim; importance-sampled "
        f"(K={args.num_samples}): {result['is_bpd']:.3f} bits/dim"
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="phase-1 SVI steps")
    parser.add_argument("--flow-steps", type=int, default=100, help="phase-2 SVI steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=100, help="importance samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a couple of seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
