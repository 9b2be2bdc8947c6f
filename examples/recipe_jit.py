r"""Recipe: train a model with a flow decoder under Pyro's JIT (``JitTrace_ELBO``).

A small VAE on real Fashion-MNIST: a diagonal Gaussian encoder, a Real NVP prior
(``FlowPrior``) and a Gaussian decoder pushed through a Glow flow (``FlowDecoder``). Pyro's JIT
ELBOs trace the model and guide once and replay the trace, so:

* every step must see tensors of the same shapes (a fixed batch size, the last short batch
  dropped); a new shape is traced anew;
* pass ``ignore_jit_warnings=True``: the flows' shape checks become constants of the trace,
  which is what they are for one shape, and torch warns about each;
* torch 2.14 deprecates ``torch.jit.trace``, on which Pyro's JIT is built, and says so once;
* the flows' caches are keyed on the tracing state, so a value computed eagerly (Pyro runs the
  model once before tracing it) never enters the trace.

``docs/recipes.rst`` shows this file; ``benchmarks/bench_jit.py`` measures when JIT pays.

Usage::

    python examples/recipe_jit.py           # 300 steps on 2048 images
    python examples/recipe_jit.py --smoke   # tiny sizes, a few steps
"""

from __future__ import annotations

import argparse
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, JitTrace_ELBO
from torch import Tensor, nn

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.infer import bits_per_dim, elbo
from pyro_vaeflow.training import MultiTensorAdam
from pyro_vaeflow.transforms import glow, realnvp

IMAGE_SHAPE = (1, 28, 28)


class JitVAE(nn.Module):
    """A VAE whose decoder is a Gaussian pushed through a Glow flow, with a flow prior."""

    def __init__(self, latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(-3), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 784),
            nn.Unflatten(-1, IMAGE_SHAPE),
        )
        self.log_scale = nn.Parameter(torch.full(IMAGE_SHAPE, -1.0))
        self.prior_flow = realnvp(latent_dim, num_layers=4, hidden_dims=(hidden, hidden))
        self.glow = glow(1, depth=depth, hidden_channels=hidden, squeeze=1)

    def model(self, x: Tensor) -> None:
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", FlowPrior(self.latent_dim, self.prior_flow))
            loc = torch.sigmoid(self.decoder(z))
            pyro.sample("x", FlowDecoder(loc, self.log_scale.exp(), self.glow), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            loc, pre_scale = self.encoder(x).chunk(2, dim=-1)
            scale = nn.functional.softplus(pre_scale) + 1e-3
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def main(args: argparse.Namespace) -> dict:
    pyro.set_rng_seed(args.seed)
    hidden, depth, images = (8, 1, 64) if args.smoke else (args.hidden, args.depth, args.images)
    steps = 3 if args.smoke else args.steps
    train = dequantize(load_images("fashion-mnist", "train")[:images])
    test = dequantize(load_images("fashion-mnist", "test")[:64])
    vae = JitVAE(args.latent_dim, hidden, depth)
    svi = SVI(
        vae.model, vae.guide, MultiTensorAdam(lr=1e-3), JitTrace_ELBO(ignore_jit_warnings=True)
    )
    batches = train[: len(train) // args.batch_size * args.batch_size].split(args.batch_size)
    with warnings.catch_warnings():  # Pyro's JIT is built on torch.jit.trace, which torch
        warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated")  # 2.14 deprecates
        for step in range(steps):  # all batches have one shape: one trace serves them all
            loss = svi.step(batches[step % len(batches)])
            if step % max(1, steps // 5) == 0 or step == steps - 1:
                print(f"step {step:4d}  loss per image {loss / args.batch_size:10.1f}", flush=True)
    bound = bits_per_dim(elbo(vae.model, vae.guide, test), 784)
    print(f"test ELBO: {bound.mean():.3f} bits/dim (per-datum, {len(test)} images)")
    return {"elbo_bpd": float(bound.mean())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4, help="Glow steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
