r"""Recipe: Pyro's own transforms in a flow decoder, over flattened images or after a Glow.

``ComposeFlow`` takes any torch or Pyro ``Transform``, on any event dimension, beside the
package's flows, so Pyro's ``spline_coupling``, ``affine_autoregressive`` or ``Permute`` can
model images: a ``ReshapeTransform`` flattens ``[1, 28, 28]`` into 784 coordinates for them and
back. Two density models of real Fashion-MNIST are fitted by SVI (no latent variable, so the
guide is empty) with ``FlowDecoder(loc, scale, flow)`` as the likelihood:

* ``spline``: flatten → spline coupling → permute → spline coupling → unflatten;
* ``glow+spline``: a Glow, then the flattened spline coupling of Pyro.

The composition's log-determinant sums each part's over the event dimensions it leaves to the
batch, and its support is its last part's codomain. Each model's test bits/dim is printed.

Usage::

    python examples/recipe_pyro_transforms.py           # 300 steps on 2048 images
    python examples/recipe_pyro_transforms.py --smoke   # tiny sizes, a few steps
"""

from __future__ import annotations

import argparse

import pyro
import torch
from pyro.distributions.transforms import Permute, spline_coupling
from pyro.infer import SVI, Trace_ELBO
from torch import Tensor, nn
from torch.distributions.transforms import ReshapeTransform

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.infer import bits_per_dim
from pyro_vaeflow.training import MultiTensorAdam
from pyro_vaeflow.transforms import ComposeFlow, glow

IMAGE_SHAPE = (1, 28, 28)
FLAT = (784,)


def spline_flow(hidden: int) -> list:
    """Pyro's spline couplings over flattened images, with a permutation between them."""
    order = torch.randperm(784, generator=torch.Generator().manual_seed(0))
    return [
        ReshapeTransform(IMAGE_SHAPE, FLAT),
        spline_coupling(784, hidden_dims=[hidden], count_bins=8),
        Permute(order),
        spline_coupling(784, hidden_dims=[hidden], count_bins=8),
        ReshapeTransform(FLAT, IMAGE_SHAPE),
    ]


def build(kind: str, hidden: int, depth: int) -> ComposeFlow:
    """``spline``, or ``glow+spline``: a Glow followed by Pyro's spline coupling."""
    parts = spline_flow(hidden)
    if kind == "glow+spline":
        parts = [glow(1, depth=depth, hidden_channels=hidden, squeeze=1), *parts]
    return ComposeFlow(parts)


class DensityModel(nn.Module):
    """p(x) = f#N(μ, σ²) with a learned mean image μ and scale σ."""

    def __init__(self, flow: ComposeFlow) -> None:
        super().__init__()
        self.flow = flow
        self.loc = nn.Parameter(torch.full(IMAGE_SHAPE, 0.5))
        self.log_scale = nn.Parameter(torch.full(IMAGE_SHAPE, -1.0))

    def likelihood(self, x: Tensor) -> FlowDecoder:
        """The distribution of a batch shaped like ``x``."""
        return FlowDecoder(self.loc.expand(x.shape), self.log_scale.exp(), self.flow)

    def model(self, x: Tensor) -> None:
        pyro.module("density", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.likelihood(x), obs=x)

    def guide(self, x: Tensor) -> None:
        """No latent variables: the ELBO is log p(x)."""


def main(args: argparse.Namespace) -> dict:
    pyro.set_rng_seed(args.seed)
    hidden, depth, images = (8, 1, 32) if args.smoke else (args.hidden, args.depth, args.images)
    steps = 3 if args.smoke else args.steps
    train = dequantize(load_images("fashion-mnist", "train")[:images])
    test = dequantize(load_images("fashion-mnist", "test")[:256])
    results = {}
    for kind in ("spline", "glow+spline"):
        density = DensityModel(build(kind, hidden, depth))
        svi = SVI(density.model, density.guide, MultiTensorAdam(lr=1e-3), Trace_ELBO())
        for _ in range(steps):
            batch = train[torch.randint(len(train), (args.batch_size,))]
            loss = svi.step(batch)
        with torch.no_grad():
            log_px = density.likelihood(test).log_prob(test)
        results[kind] = float(bits_per_dim(log_px, 784).mean())
        print(
            f"{kind:12s} last loss per image {loss / args.batch_size:9.1f}, "
            f"test {results[kind]:.3f} bits/dim",
            flush=True,
        )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2, help="Glow steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
