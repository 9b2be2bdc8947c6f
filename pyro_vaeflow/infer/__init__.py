r"""Per-datum inference queries for any Pyro model and guide whose data sit in a plate.

:func:`elbo` and :func:`log_likelihood` return one value per datum (Pyro's own estimators sum
over the batch), for hand-written guides and the autoguides that keep one latent per datum
(``AutoNormal``, ``AutoDelta`` and ``AutoGuideList`` of them: auxiliary guide sites count in
:math:`\log q` as in Pyro's ELBOs), with discrete latents enumerated in the model summed out
exactly per datum, as in ``TraceEnum_ELBO``; :func:`bits_per_dim` converts a log-density of
dequantised data to bits per dimension.
"""

from pyro_vaeflow.infer.bits import bits_per_dim
from pyro_vaeflow.infer.bound import elbo
from pyro_vaeflow.infer.diagnostics import ImportanceDiagnostics, LogWeightAccumulator
from pyro_vaeflow.infer.marginal import log_likelihood

__all__ = [
    "ImportanceDiagnostics",
    "LogWeightAccumulator",
    "bits_per_dim",
    "elbo",
    "log_likelihood",
]
