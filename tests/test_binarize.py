"""Dynamic binarisation: Bernoulli(pixel / 255), drawn afresh, usable by fit's batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from pyro_vaeflow.data import DynamicallyBinarized, binarize
from pyro_vaeflow.training.batches import Batches
from tests.helpers import fashion_pixels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binarize_draws_bernoulli_pixels(dtype):
    pixels = torch.tensor([0, 64, 128, 255], dtype=torch.uint8).repeat(20_000, 1)
    b = binarize(pixels, torch.Generator().manual_seed(0), dtype=dtype)
    assert b.dtype == dtype
    assert b.shape == pixels.shape
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    expected = torch.tensor([0, 64, 128, 255], dtype=dtype) / 255
    torch.testing.assert_close(b.mean(0), expected, rtol=0, atol=0.015)
    assert b[:, 0].sum() == 0
    assert b[:, 3].all()


def test_binarize_takes_float_probabilities():
    probabilities = torch.tensor([0.0, 0.25, 1.0]).repeat(20_000, 1)
    b = binarize(probabilities, torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.mean(0), torch.tensor([0.0, 0.25, 1.0]), rtol=0, atol=0.015)


def test_binarize_is_fresh_each_call_and_reproducible_with_a_generator():
    pixels = fashion_pixels(8)
    first, second = binarize(pixels), binarize(pixels)
    assert not torch.equal(first, second)
    same = [binarize(pixels, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(same[0], same[1])


def test_binarized_fashion_mnist_keeps_the_mean_intensity():
    pixels = fashion_pixels(64)
    b = binarize(pixels, torch.Generator().manual_seed(0))
    assert abs(b.mean().item() - pixels.float().mean().item() / 255) < 0.01


@pytest.mark.parametrize(
    ("pixels", "error"),
    [
        (torch.zeros(3, dtype=torch.int32), TypeError),
        (torch.tensor([0.5, 1.5]), ValueError),
        (torch.tensor([-0.1]), ValueError),
        (torch.tensor([float("nan")]), ValueError),
        ([0, 1], TypeError),
    ],
)
def test_binarize_rejects_bad_pixels(pixels, error):
    with pytest.raises(error):
        binarize(pixels)


def test_dataset_binarizes_afresh_at_each_access():
    pixels = fashion_pixels(16)
    data = DynamicallyBinarized(pixels, torch.Generator().manual_seed(0))
    assert len(data) == 16
    item = data[3]
    assert item.shape == (1, 28, 28)
    assert set(item.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(data[3], data[3])
    batch = DataLoader(data, batch_size=5)
    first = next(iter(batch))
    assert first.shape == (5, 1, 28, 28)
    assert first.dtype == torch.get_default_dtype()


def test_fit_batches_use_binary_items_without_noise():
    """``Batches`` leaves float items as they are: binary in, binary out, new every epoch."""
    data = DynamicallyBinarized(fashion_pixels(32), torch.Generator().manual_seed(0))
    batches = Batches(data, batch_size=8, shuffle=False)
    epochs = [torch.cat(list(batches)) for _ in range(2)]
    for images in epochs:
        assert images.shape == (32, 1, 28, 28)
        assert set(images.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epochs[0], epochs[1])


@pytest.mark.parametrize(
    "pixels",
    [torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4, 1, 28, 28), "images"],
)
def test_dataset_rejects_bad_pixels(pixels):
    with pytest.raises(ValueError, match="uint8"):
        DynamicallyBinarized(pixels)
