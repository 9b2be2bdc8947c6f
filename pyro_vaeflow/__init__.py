"""pyro_vaeflow: variational autoencoders with normalizing-flow decoders, for Pyro.

The names most users need are here; everything else lives in its module
(``transforms``, ``distributions``, ``nets``, ``models``, ``infer``, ``data``, ``training``,
``metrics``, ``plotting``, ``presets``, ``rundir``, ``run``, ``cli``).
"""

from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.training import fit
from pyro_vaeflow.transforms import glow, realnvp

__version__ = "0.1.0"

__all__ = [
    "FlowDecoder",
    "FlowPrior",
    "VAEFlow",
    "__version__",
    "bits_per_dim",
    "elbo",
    "fit",
    "glow",
    "log_likelihood",
    "realnvp",
]
