"""Distributions built from flows: the flow decoder and the flow prior."""

from pyro_vaeflow.distributions.flow_normal import FlowDecoder, FlowNormal, FlowPrior

__all__ = ["FlowDecoder", "FlowNormal", "FlowPrior"]
