"""Distributions built from flows: the flow decoder and the flow prior."""

from pyro_vaeflow.distributions.discretized_logistic import Dequantized, DiscretizedLogistic
from pyro_vaeflow.distributions.flow_normal import FlowDecoder, FlowNormal, FlowPrior
from pyro_vaeflow.distributions.moments import Moments, sample_moments

__all__ = [
    "Dequantized",
    "DiscretizedLogistic",
    "FlowDecoder",
    "FlowNormal",
    "FlowPrior",
    "Moments",
    "sample_moments",
]
