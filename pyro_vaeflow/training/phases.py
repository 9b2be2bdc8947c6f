r"""Applying a model's declared training phase: freeze what it does not train, switch off what
it trains without."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import nn

from pyro_vaeflow.models.base import ImageModel, Phase, switched_off

__all__ = ["phase", "phases_of", "resolve_phase"]


def phases_of(model: nn.Module) -> Mapping[str, Phase]:
    """The phases ``model`` declares (its ``phases`` attribute); a model that declares none,
    such as a plain ``nn.Module`` with ``model``/``guide`` methods, has one: ``"all"``.

    Example:
        >>> from pyro_vaeflow.models import TwoStageVAE
        >>> list(phases_of(TwoStageVAE)), list(phases_of(torch.nn.Linear(2, 2)))
        (['first', 'second'], ['all'])
    """
    return getattr(model, "phases", ImageModel.phases)


def resolve_phase(model: nn.Module, name: str) -> Phase:
    """The declared :class:`~pyro_vaeflow.models.Phase` ``name`` of ``model``, checked to have
    something to train."""
    declared = phases_of(model)
    if name not in declared:
        raise ValueError(
            f"{type(model).__name__} has no phase {name!r}; it declares {sorted(declared)}"
        )
    spec = declared[name]
    if spec.trains and not spec.parts(model):
        needs = spec.needs or f"one of the parts {list(spec.trains)}"
        raise ValueError(f"phase {name!r} needs a model with {needs}")
    return spec


@contextmanager
def phase(model: nn.Module, name: str) -> Iterator[list[str]]:
    """Freeze every part of ``model`` that its phase ``name`` does not train, and switch off
    what the phase declares, for the ``with`` block.

    The phases are the model's own declarations (``model.phases``, see
    :class:`~pyro_vaeflow.models.Phase`); for example a
    :class:`~pyro_vaeflow.models.VAEFlow` has ``"vae"``, ``"glow"``, ``"prior"`` and
    ``"joint"``, a :class:`~pyro_vaeflow.models.TwoStageVAE` ``"first"`` and ``"second"``,
    and the single-phase models ``"all"``. Frozen parameters get ``requires_grad=False``, so
    they receive no gradient and stay bit-identical. The previous state is restored on exit.
    Yields the trained part names.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 8, 8), 2, depth=1, base_channels=2, fc_dim=4, prior_layers=1,
        ...               prior_hidden_dims=(4,), glow_depth=1, glow_hidden_channels=4)
        >>> with phase(vae, "glow") as trained:
        ...     trained, vae.encoder.net[0].weight.requires_grad
        (['glow'], False)
    """
    spec = resolve_phase(model, name)
    trained = spec.parts(model)
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for child_name, child in model.named_children():
            child.requires_grad_(child_name in trained)
        with switched_off(model, spec.switches_off):
            yield trained
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
