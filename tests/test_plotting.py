"""Figures of samples, interpolations and training curves, on a tiny untrained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.plotting import (
    image_grid,
    interpolate,
    plot_interpolation,
    plot_samples,
    plot_sharpening,
    plot_training_curves,
    save_figure,
)

SIDE = 28 + 2  # an image and its padding in a grid


def grid_side(count: int) -> int:
    return count * SIDE + 2


@pytest.fixture(scope="module")
def vae() -> VAEFlow:
    torch.manual_seed(0)
    return VAEFlow(
        (1, 28, 28),
        4,
        base_channels=4,
        fc_dim=16,
        prior_layers=2,
        prior_hidden_dims=(8, 8),
        glow_depth=1,
        glow_hidden_channels=8,
    )


def pixels(fig: Figure, axis: int = 0) -> np.ndarray:
    (image,) = fig.axes[axis].images
    return np.asarray(image.get_array())


HISTORY = [
    {"phase": "vae", "epoch": 1, "lr": 1e-3, "train_bpd": 5.0, "val_bpd": None},
    {"phase": "vae", "epoch": 2, "lr": 1e-3, "train_bpd": 4.5, "val_bpd": None},
    {"phase": "glow", "epoch": 1, "lr": 1e-3, "train_bpd": math.nan, "val_bpd": None},
    {"phase": "glow", "epoch": 2, "lr": 1e-3, "train_bpd": 4.0, "val_bpd": None},
    {"phase": "prior", "epoch": 1, "lr": 1e-3, "train_bpd": 3.9, "val_bpd": 4.0},
]


# -- image_grid and save_figure ----------------------------------------------------------------


def test_image_grid_shape_range_and_channels():
    grid = image_grid(torch.linspace(-1, 2, 5 * 28 * 28).reshape(5, 1, 28, 28), nrow=2)
    assert grid.shape == (3, grid_side(3), grid_side(2))
    assert grid.min() == 0
    assert grid.max() == 1
    rgb = image_grid(torch.rand(3, 3, 8, 8), nrow=8, padding=0)
    assert rgb.shape == (3, 8, 24)
    assert image_grid(torch.full((1, 1, 2, 2), math.nan), padding=0).eq(0).all()


@pytest.mark.parametrize(
    ("images", "nrow", "match"),
    [
        (torch.rand(1, 28, 28), 8, "N×C×H×W"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 8, "float"),
        (torch.rand(2, 2, 4, 4), 8, "1 or 3 channels"),
        (torch.rand(0, 1, 4, 4), 8, "at least one image"),
        (torch.rand(2, 1, 4, 4), 0, "nrow"),
    ],
    ids=["3d", "uint8", "two-channels", "empty", "nrow-0"],
)
def test_image_grid_errors(images, nrow, match):
    with pytest.raises(ValueError, match=match):
        image_grid(images, nrow)


def test_save_figure_writes_png_and_creates_folders(tmp_path, vae):
    path = save_figure(plot_samples(vae, n=1, temperatures=(0.5,)), tmp_path / "a" / "b" / "s")
    assert path == tmp_path / "a" / "b" / "s.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
    with pytest.raises(TypeError, match="Figure"):
        save_figure("not a figure", tmp_path / "x.png")


# -- sample figures ----------------------------------------------------------------------------


def test_plot_samples_one_panel_per_temperature(vae):
    fig = plot_samples(vae, n=4)
    assert isinstance(fig, Figure)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert [ax.get_title() for ax in fig.axes] == ["T = 1.0", "T = 0.7", "T = 0.5"]
    for k in range(3):
        assert pixels(fig, k).shape == (grid_side(2), grid_side(2), 3)
    fig = plot_samples(vae, n=5, temperatures=[0.25], nrow=5)
    assert len(fig.axes) == 1
    assert pixels(fig).shape == (grid_side(1), grid_side(5), 3)


def test_plot_samples_same_z_in_every_panel_and_reproducible(vae):
    fig = plot_samples(vae, n=3, temperatures=(0.0, 0.5, 0.0))
    assert np.array_equal(pixels(fig, 0), pixels(fig, 2))
    assert not np.array_equal(pixels(fig, 0), pixels(fig, 1))
    again = plot_samples(vae, n=3, temperatures=(0.0, 0.5, 0.0))
    assert np.array_equal(pixels(fig, 1), pixels(again, 1))
    other = plot_samples(vae, n=3, temperatures=(0.0, 0.5, 0.0), seed=1)
    assert not np.array_equal(pixels(fig, 1), pixels(other, 1))


def test_plot_sharpening_layout(vae):
    fig = plot_sharpening(vae, n=3, samples_per_z=2, temperature=0.7)
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title() == "Glow samples\nT = 0.7"
    assert pixels(fig, 0).shape == (grid_side(3), grid_side(1), 3)
    assert pixels(fig, 1).shape == (grid_side(3), grid_side(2), 3)


def test_plot_interpolation_layout_and_shared_endpoints(vae):
    slerp = plot_interpolation(vae, n_rows=2, steps=4)
    assert len(slerp.axes) == 1
    assert [t.get_text() for t in slerp.axes[0].get_xticklabels()] == ["$z_0$", "$z_1$"]
    grid = pixels(slerp)
    assert grid.shape == (grid_side(2), grid_side(4), 3)
    line = pixels(plot_interpolation(vae, n_rows=2, steps=4, method="linear"))
    first, last = slice(2, SIDE), slice(3 * SIDE + 2, 4 * SIDE)
    # the prior flow and decoder run on batches of different shapes: equal up to rounding
    np.testing.assert_allclose(grid[:, first], line[:, first], atol=1e-5)
    np.testing.assert_allclose(grid[:, last], line[:, last], atol=1e-5)


@pytest.mark.parametrize(
    "plot",
    [
        lambda vae: plot_samples(vae, n=2),
        lambda vae: plot_sharpening(vae, n=2, samples_per_z=2),
        lambda vae: plot_interpolation(vae, n_rows=1, steps=3),
    ],
    ids=["samples", "sharpening", "interpolation"],
)
def test_plotting_leaves_rng_and_training_mode_alone(vae, plot):
    vae.train()
    before = torch.get_rng_state()
    plot(vae)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(module.training for module in vae.modules())
    vae.eval()
    plot(vae)
    assert not any(module.training for module in vae.modules())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda vae: plot_samples(vae, n=0), "n must be"),
        (lambda vae: plot_samples(vae, n=True), "n must be"),
        (lambda vae: plot_samples(vae, temperatures=()), "at least one"),
        (lambda vae: plot_samples(vae, temperatures=0.5), "sequence"),
        (lambda vae: plot_samples(vae, temperatures=(1.0, -0.5)), "temperature"),
        (lambda vae: plot_samples(vae, temperatures=(math.inf,)), "finite"),
        (lambda vae: plot_samples(vae, seed=0.5), "seed"),
        (lambda vae: plot_sharpening(vae, samples_per_z=0), "samples_per_z"),
        (lambda vae: plot_sharpening(vae, temperature=math.nan), "temperature"),
        (lambda vae: plot_interpolation(vae, steps=1), "steps"),
        (lambda vae: plot_interpolation(vae, n_rows=0), "n_rows"),
        (lambda vae: plot_interpolation(vae, method="cubic"), "method"),
    ],
    ids=[
        "n-0",
        "n-bool",
        "no-temperatures",
        "scalar-temperatures",
        "negative-temperature",
        "infinite-temperature",
        "float-seed",
        "samples-per-z-0",
        "nan-temperature",
        "steps-1",
        "rows-0",
        "method",
    ],
)
def test_sample_figure_errors(vae, call, match):
    with pytest.raises(ValueError, match=match):
        call(vae)


# -- interpolate -------------------------------------------------------------------------------


def test_interpolate_endpoints_line_and_arc():
    a, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)  # equal norms
    for method in ("linear", "slerp"):
        path = interpolate(a, b, 6, method)
        assert path.shape == (6, 3, 5)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(interpolate(a, b, 3, "linear")[1], (a + b) / 2)
    arc = interpolate(a, b, 7, "slerp")
    torch.testing.assert_close(arc.norm(dim=-1), a.norm(dim=-1).expand(7, 3))
    parallel = interpolate(a, 2 * a, 3, "slerp")  # Ω = 0: the line
    torch.testing.assert_close(parallel[1], 1.5 * a)


def test_interpolate_errors():
    with pytest.raises(ValueError, match="steps"):
        interpolate(torch.zeros(2), torch.ones(2), 1)
    with pytest.raises(ValueError, match="method"):
        interpolate(torch.zeros(2), torch.ones(2), 3, "cubic")
    with pytest.raises(ValueError, match="shape"):
        interpolate(torch.zeros(2), torch.ones(3), 3)


# -- training curves ---------------------------------------------------------------------------


def test_plot_training_curves_phases_and_lines():
    fig = plot_training_curves(HISTORY)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "epoch (all phases)"
    assert ax.get_ylabel() == "bits/dim"
    assert [t.get_text() for t in ax.texts] == ["vae", "glow", "prior"]
    assert len(ax.patches) == 3  # one shaded span per phase
    # one train line per phase (broken between phases) and one validation line
    labels = [line.get_label() for line in ax.lines]
    assert len(labels) == 4
    assert [x for x in labels if x[0] != "_"] == ["train", "validation"]
    x, y = ax.lines[1].get_data()
    assert list(x) == [3, 4]
    assert math.isnan(y[0])
    assert [t.get_text() for t in fig.legends[0].texts] == ["train", "validation"]


def test_plot_training_curves_splits_a_restarted_phase():
    rows = [{"phase": "vae", "epoch": e, "train_bpd": 5.0 - e} for e in (1, 2, 1, 2, 3)]
    fig = plot_training_curves(rows, title="two runs")
    assert [t.get_text() for t in fig.axes[0].texts] == ["vae", "vae"]
    assert fig.axes[0].get_title() == "two runs"
    assert fig.legends[0].texts[0].get_text() == "train"


def test_plot_training_curves_over_the_logged_steps():
    history = [
        {"phase": "vae", "epoch": 1, "step": 4, "train_bpd": 6.0, "val_bpd": 6.2},
        {"phase": "vae", "epoch": 2, "step": 8, "train_bpd": 5.0, "val_bpd": 5.1},
        {"phase": "glow", "epoch": 1, "step": 4, "train_bpd": 4.5, "val_bpd": None},
    ]
    steps = [{"phase": "vae", "step": k, "train_bpd": 7.0 - k / 4} for k in (2, 4, 6, 8)]
    steps += [{"phase": "glow", "step": k, "train_bpd": 4.5} for k in (2, 4)]
    fig = plot_training_curves(history, steps=steps, smoothing=0.0)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "training step (all phases)"
    assert ax.get_xlim() == (0.0, 12.0)  # 8 steps of vae, then 4 of glow
    assert [t.get_text() for t in ax.texts] == ["vae", "glow"]
    logged, smoothed, validation, glow_logged, _ = ax.lines
    assert list(logged.get_xdata()) == [2, 4, 6, 8]
    assert list(smoothed.get_ydata()) == list(logged.get_ydata())  # no smoothing
    assert list(validation.get_xdata()) == [4, 8]
    assert list(glow_logged.get_xdata()) == [10, 12]
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert legend == ["train (logged)", "train (smoothed)", "validation (epoch)"]
    with pytest.raises(ValueError, match="smoothing"):
        plot_training_curves(history, steps=steps, smoothing=1.0)


@pytest.mark.parametrize(
    ("history", "match"),
    [
        ([], "empty"),
        ({"phase": "vae", "train_bpd": 1.0}, "list of dicts"),
        ([1.0], r"history\[0\] must be a dict"),
        ([{"phase": "vae", "epoch": 1}], "train_bpd"),
    ],
    ids=["empty", "dict", "not-dicts", "missing-key"],
)
def test_plot_training_curves_errors(history, match):
    with pytest.raises(ValueError, match=match):
        plot_training_curves(history)
