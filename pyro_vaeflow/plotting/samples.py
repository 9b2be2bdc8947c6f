r"""Figures of samples: Glow temperatures, "sharpening" (paper Fig. 4), interpolation (Fig. 5).

Each function draws :math:`z` from the prior, decodes it, and returns a
:class:`matplotlib.figure.Figure`. Sampling is reproducible from ``seed`` and leaves the
caller's global RNG state unchanged (see :mod:`pyro_vaeflow.plotting`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from pyro_vaeflow.distributions import FlowNormal
from pyro_vaeflow.plotting._common import (
    format_temperature,
    new_figure,
    panel_inches,
    reseed,
    sampling,
    show_grid,
)
from pyro_vaeflow.plotting.utils import image_grid
from pyro_vaeflow.validation import check_choice, check_int, check_number

if TYPE_CHECKING:
    from pyro_vaeflow.models import VAEFlow

__all__ = [
    "interpolate",
    "plot_interpolation",
    "plot_sample_grid",
    "plot_samples",
    "plot_sharpening",
]

_METHODS = ("linear", "slerp")


def plot_samples(
    vae: VAEFlow,
    n: int = 64,
    temperatures: Sequence[float] = (1.0, 0.7, 0.5),
    *,
    nrow: int | None = None,
    prior_temperature: float = 1.0,
    seed: int = 0,
    panel_height: float = 3.0,
) -> Figure:
    r"""Samples at several Glow temperatures, one panel per temperature.

    .. math:: z_i \sim p(z), \qquad \varepsilon_i \sim \mathcal{N}(0, I), \qquad
              x_i^{(T)} = f\!\left(g_\mu(z_i) + T\, g_\sigma(z_i) \odot \varepsilon_i\right).

    Every panel uses the same :math:`z_i` *and* the same noise :math:`\varepsilon_i`, so the
    panels differ only by the temperature :math:`T`.

    Args:
        vae: the model.
        n: images per panel.
        temperatures: the Glow temperatures, one panel each.
        nrow: images per row (default :math:`\lceil\sqrt n\,\rceil`).
        prior_temperature: the temperature of :math:`p(z)`.
        seed: the seed of the sampling.
        panel_height: the height of a panel in inches.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 28, 28), 4, base_channels=4, fc_dim=16, prior_layers=2,
        ...               prior_hidden_dims=(8, 8), glow_depth=1, glow_hidden_channels=8)
        >>> fig = plot_samples(vae, n=4)
        >>> [ax.get_title() for ax in fig.axes]
        ['T = 1.0', 'T = 0.7', 'T = 0.5']
    """
    check_int("n", n)
    if isinstance(temperatures, (int, float, str)):
        raise ValueError(f"temperatures must be a sequence of numbers, got {temperatures!r}")
    temperatures = [check_number("temperature", t, low=0.0) for t in temperatures]
    if not temperatures:
        raise ValueError("temperatures must name at least one temperature")
    prior_temperature = check_number("prior_temperature", prior_temperature, low=0.0)
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    check_int("nrow", nrow)
    grids = []
    with sampling(vae, seed):
        z = vae.sample_latents(n, prior_temperature)
        device = z.device
        for t in temperatures:
            reseed(seed + 1, device)  # the same ε for every temperature
            grids.append(image_grid(vae.decode(z, t), nrow))
    width = panel_inches(grids[0], panel_height)
    fig = new_figure(len(grids) * width, panel_height + 0.6)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid, t in zip(axes, grids, temperatures, strict=True):
        show_grid(ax, grid, f"T = {format_temperature(t)}")
    fig.suptitle(
        f"Samples at Glow temperature T (same z for every panel, z ~ p(z) at "
        f"T = {format_temperature(prior_temperature)})"
    )
    return fig


def plot_sample_grid(
    model: nn.Module,
    n: int = 64,
    *,
    title: str | None = None,
    nrow: int | None = None,
    seed: int = 0,
    panel_height: float = 4.0,
    **sample_options,
) -> Figure:
    r"""One grid of ``model.sample(n, **sample_options)``, for any model with a ``sample`` method.

    Example:
        >>> from pyro_vaeflow.models import TwoStageVAE
        >>> vae = TwoStageVAE((1, 28, 28), 2, base_channels=2, fc_dim=8,
        ...                   second_hidden_dims=(8,))
        >>> plot_sample_grid(vae, n=4, title="Two-stage VAE").axes[0].get_title()
        'Two-stage VAE'
    """
    check_int("n", n)
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    check_int("nrow", nrow)
    with sampling(model, seed):
        grid = image_grid(model.sample(n, **sample_options), nrow)
    fig = new_figure(panel_inches(grid, panel_height), panel_height + 0.4)
    show_grid(fig.subplots(), grid, title or f"{n} samples of {type(model).__name__}")
    return fig


def plot_sharpening(
    vae: VAEFlow,
    n: int = 8,
    temperature: float = 0.5,
    samples_per_z: int = 4,
    *,
    prior_temperature: float = 1.0,
    seed: int = 0,
    image_inches: float = 0.8,
) -> Figure:
    r"""The underlying VAE's mean next to Glow samples from the same :math:`z` (paper Fig. 4).

    Row :math:`i` shows :math:`g_\mu(z_i)` (before the Glow layer) on the left, then
    ``samples_per_z`` draws :math:`f\!\left(g_\mu(z_i) + T g_\sigma(z_i) \odot
    \varepsilon\right)` on the right. The Glow layer starts as the identity after the VAE
    phase, so :math:`g_\mu(z)` is still an image; the figure shows how it "sharpens" it.

    Args:
        vae: the model.
        n: rows, one :math:`z_i \sim p(z)` each.
        temperature: the Glow temperature :math:`T`.
        samples_per_z: Glow samples per :math:`z_i`.
        prior_temperature: the temperature of :math:`p(z)`.
        seed: the seed of the sampling.
        image_inches: the size of one image in inches.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 28, 28), 4, base_channels=4, fc_dim=16, prior_layers=2,
        ...               prior_hidden_dims=(8, 8), glow_depth=1, glow_hidden_channels=8)
        >>> fig = plot_sharpening(vae, n=3, samples_per_z=2)
        >>> [ax.get_title() for ax in fig.axes]
        ['VAE mean\n$g_\\mu(z)$', 'Glow samples\nT = 0.5']
    """
    check_int("n", n)
    check_int("samples_per_z", samples_per_z)
    temperature = check_number("temperature", temperature, low=0.0)
    prior_temperature = check_number("prior_temperature", prior_temperature, low=0.0)
    with sampling(vae, seed):
        z = vae.sample_latents(n, prior_temperature)
        mean = vae.decoder_mean(z)
        glow = torch.stack([vae.decode(z, temperature) for _ in range(samples_per_z)], dim=1)
    mean_grid = image_grid(mean, nrow=1)
    glow_grid = image_grid(glow.flatten(0, 1), nrow=samples_per_z)
    inches = image_inches / (mean.shape[-1] + 2)  # per pixel of the grids
    width = max(inches * (mean_grid.shape[2] + glow_grid.shape[2]) + 0.3, 2.8)  # titles' room
    fig = new_figure(width, inches * mean_grid.shape[1] + 1.1)
    # widths in proportion to the grids: both are then drawn at the same scale, rows aligned
    left, right = fig.subplots(1, 2, width_ratios=[mean_grid.shape[2], glow_grid.shape[2]])
    show_grid(left, mean_grid, "VAE mean\n" + r"$g_\mu(z)$")
    show_grid(right, glow_grid, f"Glow samples\nT = {format_temperature(temperature)}")
    fig.suptitle("The same z in each row")
    return fig


def plot_interpolation(
    vae: VAEFlow,
    n_rows: int = 6,
    steps: int = 10,
    *,
    method: str = "slerp",
    temperature: float = 0.0,
    prior_temperature: float = 1.0,
    seed: int = 0,
    image_inches: float = 0.8,
) -> Figure:
    r"""Interpolations between pairs of prior samples, one pair per row (paper Fig. 5).

    The endpoints are prior samples :math:`z_0 = h(u_0)`, :math:`z_1 = h(u_1)`, where
    :math:`u \sim \mathcal{N}(0, T_p^2 I)` is the prior's Gaussian base and :math:`h` its flow
    (the identity for a Normal prior). ``method="slerp"`` (the default) interpolates the base
    spherically and maps each point through :math:`h`,

    .. math:: u_t = \frac{\sin((1 - t)\Omega)}{\sin\Omega} u_0
              + \frac{\sin(t\Omega)}{\sin\Omega} u_1, \qquad z_t = h(u_t),

    so every point keeps the radius typical of the base Gaussian and is a likely prior sample;
    a straight line between two Gaussian samples in :math:`d` dimensions passes, at its
    midpoint, at :math:`1/\sqrt 2` of the typical radius, where the prior has almost no mass.
    ``method="linear"`` gives the straight line :math:`z_t = (1 - t) z_0 + t z_1` in the
    latent space itself. Each point is decoded at Glow temperature ``temperature`` (0: the
    Glow map of the decoder mean, :math:`f(g_\mu(z_t))`).

    Args:
        vae: the model.
        n_rows: pairs :math:`(z_0, z_1)`, one row each.
        steps: images per row, endpoints included.
        method: ``"slerp"`` or ``"linear"``, as above.
        temperature: the Glow temperature of the decoding.
        prior_temperature: the temperature :math:`T_p` of the endpoints.
        seed: the seed of the sampling.
        image_inches: the size of one image in inches.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 28, 28), 4, base_channels=4, fc_dim=16, prior_layers=2,
        ...               prior_hidden_dims=(8, 8), glow_depth=1, glow_hidden_channels=8)
        >>> fig = plot_interpolation(vae, n_rows=2, steps=5)
        >>> len(fig.axes), [t.get_text() for t in fig.axes[0].get_xticklabels()]
        (1, ['$z_0$', '$z_1$'])
    """
    check_int("n_rows", n_rows)
    check_int("steps", steps, low=2)
    check_choice("method", method, _METHODS)
    temperature = check_number("temperature", temperature, low=0.0)
    prior_temperature = check_number("prior_temperature", prior_temperature, low=0.0)
    with sampling(vae, seed):
        prior = vae.prior(1.0)
        if isinstance(prior, FlowNormal):  # a Gaussian base pushed through a flow h
            flow = prior.flow
            noise = torch.randn(
                (2, n_rows, *prior.loc.shape), dtype=prior.loc.dtype, device=prior.loc.device
            )
            base = prior.loc + prior_temperature * prior.scale * noise
        else:
            flow = None
            base = vae.prior(prior_temperature).expand([2, n_rows]).sample()
        to_z = flow if flow is not None else (lambda u: u)
        if method == "slerp":
            z = to_z(interpolate(base[0], base[1], steps, "slerp"))
        else:
            z = interpolate(to_z(base[0]), to_z(base[1]), steps, "linear")
        images = vae.decode(z.transpose(0, 1).flatten(0, 1), temperature)  # row by row
    grid = image_grid(images, nrow=steps)
    fig = new_figure(steps * image_inches + 0.3, n_rows * image_inches + 0.7)
    ax = fig.subplots()
    show_grid(ax, grid, f"Interpolation ({method}), Glow T = {format_temperature(temperature)}")
    pitch = (grid.shape[2] - 2) / steps  # make_grid's default padding of image_grid is 2
    ax.set_xticks([1 + pitch / 2, grid.shape[2] - 1 - pitch / 2], [r"$z_0$", r"$z_1$"])
    ax.tick_params(length=0)
    return fig


def interpolate(start: Tensor, end: Tensor, steps: int, method: str = "linear") -> Tensor:
    r"""Points from ``start`` to ``end`` (both included), linearly or spherically.

    .. math:: \text{linear: } (1 - t)\, a + t\, b, \qquad
              \text{slerp: } \frac{\sin((1 - t)\Omega)}{\sin\Omega} a
              + \frac{\sin(t\Omega)}{\sin\Omega} b, \quad
              \cos\Omega = \frac{a \cdot b}{\lVert a\rVert \lVert b\rVert},

    for :math:`t = 0, \frac{1}{s - 1}, \dots, 1`, over the last dimension; slerp falls back
    to the line where :math:`a` and :math:`b` are (anti)parallel.

    Args:
        start: the points :math:`a`, of shape ``[..., d]``.
        end: the points :math:`b`, of the same shape.
        steps: the number :math:`s \ge 2` of points.
        method: ``"linear"`` or ``"slerp"``.

    Returns:
        A tensor ``[steps, ..., d]``.

    Example:
        >>> a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
        >>> round(interpolate(a, b, 3, "slerp")[1].norm().item(), 6)
        1.0
        >>> interpolate(a, b, 3, "linear")[1]
        tensor([0.5000, 0.5000])
    """
    check_int("steps", steps, low=2)
    check_choice("method", method, _METHODS)
    if start.shape != end.shape:
        raise ValueError(f"start and end differ in shape: {tuple(start.shape)}, {tuple(end.shape)}")
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device)
    t = t.reshape(steps, *([1] * start.dim()))
    line = (1 - t) * start + t * end
    if method == "linear":
        return line
    cos = torch.nn.functional.cosine_similarity(start, end, dim=-1).unsqueeze(-1)
    omega = torch.acos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    sin = torch.where(safe, sin, torch.ones_like(sin))
    arc = (torch.sin((1 - t) * omega) * start + torch.sin(t * omega) * end) / sin
    return torch.where(safe, arc, line)
