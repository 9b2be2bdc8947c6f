r"""The training phases: which parts of a model each trains, and which stages are switched off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["PHASES", "phase"]

PHASES: dict[str, tuple[str, ...]] = {
    "vae": ("encoder", "decoder", "decoder_scale", "prior_flow"),
    "glow": ("glow",),
    "prior": ("prior_flow",),
    "joint": ("encoder", "decoder", "decoder_scale", "prior_flow", "glow"),
    "second": ("second_stage",),
    "all": (),
}
"""Phase name → the submodules it trains; every other submodule is frozen (``"all"``: none)."""

_SWITCHED_OFF: dict[str, tuple[str, ...]] = {"vae": ("glow_enabled", "second_stage_enabled")}
"""Phase name → boolean attributes of the model set to ``False`` during the phase."""


@contextmanager
def phase(vae: nn.Module, name: str) -> Iterator[list[str]]:
    """Freeze every part of ``vae`` that phase ``name`` does not train, for the ``with`` block.

    * ``"vae"``: encoder, decoder and prior, with the Glow layer (``glow_enabled``) and a
      :class:`~pyro_vaeflow.models.TwoStageVAE`'s second stage (``second_stage_enabled``)
      switched off (phase 1);
    * ``"glow"``: only the Glow layer (phase 2);
    * ``"prior"``: only the flow prior (refitting it, as the paper did for CIFAR-10);
    * ``"joint"``: everything of a ``VAEFlow`` at once (the paper's ablation);
    * ``"second"``: only the second-stage VAE of a ``TwoStageVAE``;
    * ``"all"``: every submodule (single-phase models such as the standalone Glow).

    Frozen parameters get ``requires_grad=False``, so they receive no gradient and stay
    bit-identical. The previous state is restored on exit. Yields the trained part names.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 8, 8), 2, depth=1, base_channels=2, fc_dim=4, prior_layers=1,
        ...               prior_hidden_dims=(4,), glow_depth=1, glow_hidden_channels=4)
        >>> with phase(vae, "glow") as trained:
        ...     trained, vae.encoder.net[0].weight.requires_grad
        (['glow'], False)
    """
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; expected one of {sorted(PHASES)}")
    children = dict(vae.named_children())
    wanted = PHASES[name] or tuple(children)
    trained = [part for part in wanted if part in children]
    needs = {
        "glow": "Glow layer (glow_depth > 0)",
        "prior": "flow prior (prior='flow')",
        "second": "second stage (a TwoStageVAE)",
    }
    if name in needs and not trained:
        raise ValueError(f"phase {name!r} needs a model with a {needs[name]}")
    saved = {n: p.requires_grad for n, p in vae.named_parameters()}
    flags = [flag for flag in _SWITCHED_OFF.get(name, ()) if hasattr(vae, flag)]
    switches = {flag: getattr(vae, flag) for flag in flags}
    try:
        for child_name, child in children.items():
            child.requires_grad_(child_name in trained)
        for flag in switches:
            setattr(vae, flag, False)
        yield trained
    finally:
        for n, p in vae.named_parameters():
            p.requires_grad_(saved[n])
        for flag, value in switches.items():
            setattr(vae, flag, value)
