r"""The training phases: which parts of a :class:`~pyro_vaeflow.models.VAEFlow` each trains."""

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
}
"""Phase name → the submodules it trains; every other submodule is frozen."""


@contextmanager
def phase(vae: nn.Module, name: str) -> Iterator[list[str]]:
    """Freeze every part of ``vae`` that phase ``name`` does not train, for the ``with`` block.

    * ``"vae"``: encoder, decoder and prior, with the Glow layer switched off (phase 1);
    * ``"glow"``: only the Glow layer (phase 2);
    * ``"prior"``: only the flow prior (refitting it, as the paper did for CIFAR-10);
    * ``"joint"``: everything at once (the paper's ablation).

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
    trained = [part for part in PHASES[name] if part in children]
    if name in ("glow", "prior") and not trained:
        part = "Glow layer (glow_depth > 0)" if name == "glow" else "flow prior (prior='flow')"
        raise ValueError(f"phase {name!r} needs a model with a {part}")
    saved = {n: p.requires_grad for n, p in vae.named_parameters()}
    glow_enabled = getattr(vae, "glow_enabled", True)
    try:
        for child_name, child in children.items():
            child.requires_grad_(child_name in trained)
        if name == "vae":
            vae.glow_enabled = False
        yield trained
    finally:
        for n, p in vae.named_parameters():
            p.requires_grad_(saved[n])
        vae.glow_enabled = glow_enabled
