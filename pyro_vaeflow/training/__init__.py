"""Training: one phase at a time with SVI and ``Trace_ELBO``, with checkpoints."""

from pyro_vaeflow.training.batches import Batches, to_model
from pyro_vaeflow.training.fit import fit, loss_to_bits_per_dim
from pyro_vaeflow.training.guarded_svi import GuardedSVI, NonFiniteLossError
from pyro_vaeflow.training.optim import MultiTensorAdam
from pyro_vaeflow.training.phases import PHASES, phase

__all__ = [
    "PHASES",
    "Batches",
    "GuardedSVI",
    "MultiTensorAdam",
    "NonFiniteLossError",
    "fit",
    "loss_to_bits_per_dim",
    "phase",
    "to_model",
]
