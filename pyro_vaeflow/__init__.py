"""pyro_vaeflow: variational autoencoders with normalizing-flow decoders, for Pyro."""

from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.transforms import glow, realnvp

__version__ = "0.1.0"

__all__ = ["FlowDecoder", "FlowPrior", "__version__", "glow", "realnvp"]
