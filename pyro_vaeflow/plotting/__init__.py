r"""Figures of a trained model and its training, with matplotlib and torchvision.

- :func:`plot_samples`: a grid of samples at Glow temperatures 1.0, 0.7 and 0.5;
- :func:`plot_sharpening`: the VAE mean next to Glow samples from the same :math:`z`
  (paper Fig. 4);
- :func:`plot_interpolation`: latent interpolations (paper Fig. 5);
- :func:`plot_sample_grid`: one grid of samples of any model (the baselines);
- :func:`plot_training_curves`: the training loss over the phases (smoothed), with each
  epoch's validation bits/dim;
- :func:`image_grid`, :func:`save_figure`, :func:`interpolate`, :func:`smooth`: the building
  blocks;
- :data:`FIGURES`: the figures of a model by the names its
  :meth:`~pyro_vaeflow.models.ImageModel.figures` declares.

The figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas, made without
``pyplot``, so a user's backend and open figures are left alone. Sampling runs under
:func:`torch.no_grad` in eval mode, inside :func:`torch.random.fork_rng` seeded from ``seed``:
the figures are reproducible and the caller's global RNG state is unchanged.
"""

from pyro_vaeflow.plotting.curves import plot_training_curves, smooth
from pyro_vaeflow.plotting.samples import (
    interpolate,
    plot_interpolation,
    plot_sample_grid,
    plot_samples,
    plot_sharpening,
)
from pyro_vaeflow.plotting.utils import image_grid, save_figure

FIGURES = {
    "samples": plot_samples,
    "sharpening": plot_sharpening,
    "interpolation": plot_interpolation,
    "sample_grid": plot_sample_grid,
}
"""The figures of a model, ``figure(model, seed=...)``, by the names models declare."""

__all__ = [
    "FIGURES",
    "image_grid",
    "interpolate",
    "plot_interpolation",
    "plot_sample_grid",
    "plot_samples",
    "plot_sharpening",
    "plot_training_curves",
    "save_figure",
    "smooth",
]
