"""Training: one phase at a time with SVI and ``Trace_ELBO``, with checkpoints.

:func:`fit` is the engine; its parts can be used and tested alone: the options
(:class:`FitConfig`), the learning-rate schedule (:class:`LearningRateSchedule`), early stopping
and the time budget (:class:`EarlyStopping`, :class:`TimeBudget`), the phase checkpoint
(:class:`PhaseCheckpoint`), the position inside an epoch and the decision to checkpoint or stop
after a step (:class:`EpochProgress`, :class:`StepControl`), the phases a model declares
(:func:`phase`) and the guarded SVI step
(:class:`GuardedSVI`, :class:`MultiTensorAdam`), and the same step over every process of a
:mod:`torch.distributed` group (:class:`DataParallelSVI`), which ``fit`` takes when a group is
initialised.
"""

from pyro_vaeflow.training.batches import Batches, to_model
from pyro_vaeflow.training.checkpoint import PhaseCheckpoint
from pyro_vaeflow.training.config import FitConfig
from pyro_vaeflow.training.epoch import EpochProgress, StepControl
from pyro_vaeflow.training.fit import fit, loss_to_bits_per_dim
from pyro_vaeflow.training.guarded_svi import GuardedSVI, NonFiniteLossError
from pyro_vaeflow.training.optim import MultiTensorAdam
from pyro_vaeflow.training.parallel import DataParallelSVI
from pyro_vaeflow.training.phases import phase, phases_of
from pyro_vaeflow.training.schedule import LearningRateSchedule
from pyro_vaeflow.training.stopping import EarlyStopping, TimeBudget

__all__ = [
    "Batches",
    "DataParallelSVI",
    "EarlyStopping",
    "EpochProgress",
    "FitConfig",
    "GuardedSVI",
    "LearningRateSchedule",
    "MultiTensorAdam",
    "NonFiniteLossError",
    "PhaseCheckpoint",
    "StepControl",
    "TimeBudget",
    "fit",
    "loss_to_bits_per_dim",
    "phase",
    "phases_of",
    "to_model",
]
