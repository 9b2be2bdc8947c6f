"""The CUDA path: on a GPU, every flow and every model computes what it computes on the CPU.

The flow and model tests build one object on the CPU, copy it to the GPU and compare the two in
float64, so that TF32 convolutions cannot hide a wrong log-determinant; the others train, resume,
sample and run the CLI on the GPU. Without CUDA the tests skip (CI has no GPU); on a GPU machine
run ``pytest tests/test_cuda.py`` (``benchmarks/gpu_checks.sh`` does).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vaeflow.acceleration import accelerate
from pyro_vaeflow.cli import main
from pyro_vaeflow.data import binarize
from pyro_vaeflow.models import VAEFlow, build_model, load_model
from pyro_vaeflow.training import Batches, fit
from tests.helpers import TINY, TINY_MODELS, TINY_TWO_STAGE, fashion_images, fashion_pixels
from tests.registry import CASES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")
MODELS = {
    "vaeflow": ("vaeflow", {"latent_dim": 4, **TINY}),
    "vaeflow-checkpointed": ("vaeflow", {"latent_dim": 4, **TINY, "glow_checkpoint": True}),
    "two-stage": ("two-stage", TINY_TWO_STAGE),
    **{name: (name.split("-")[0], sizes) for name, sizes in TINY_MODELS.items()},
}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.device.type == "cuda"
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "factory", "shape"), CASES, ids=[case[0] for case in CASES])
def test_flow_matches_the_cpu(name, factory, shape, float64):
    flow = factory()
    on_gpu = copy.deepcopy(flow).to(CUDA)
    x = torch.randn(3, *shape)
    y = flow(x)
    y_gpu = on_gpu(x.to(CUDA))
    _close(y_gpu, y)
    _close(on_gpu.log_abs_det_jacobian(x.to(CUDA), y_gpu), flow.log_abs_det_jacobian(x, y))
    _close(on_gpu.inv(y.to(CUDA)), flow.inv(y))
    _close(on_gpu.inv(y_gpu), x)  # the cached pair


def _log_weight(model, x: torch.Tensor, latents: dict) -> torch.Tensor:
    """log p(x, z) − log q(z | x) at the given latents (none for a flow)."""
    guide = poutine.trace(poutine.condition(model.guide, data=latents)).get_trace(x)
    joint = poutine.trace(poutine.condition(model.model, data=latents)).get_trace(x)
    return joint.log_prob_sum() - guide.log_prob_sum()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_log_weight_matches_the_cpu(name, float64):
    architecture, sizes = MODELS[name]
    model = build_model(architecture, (1, 28, 28), **sizes).eval()
    x = fashion_images(4).double()
    if sizes.get("likelihood") == "bernoulli":
        x = binarize(fashion_pixels(4), torch.Generator().manual_seed(0)).double()
    guide = poutine.trace(model.guide).get_trace(x)
    latents = {
        site: guide.nodes[site]["value"].detach()
        for site in guide.stochastic_nodes
        if not site_is_subsample(guide.nodes[site])
    }
    on_gpu = copy.deepcopy(model).to(CUDA)
    expected = _log_weight(model, x, latents)
    gpu_latents = {site: value.to(CUDA) for site, value in latents.items()}
    actual = _log_weight(on_gpu, x.to(CUDA), gpu_latents)
    _close(actual, expected)
    expected.backward()
    actual.backward()
    gradients = dict(on_gpu.named_parameters())
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            _close(gradients[name].grad, parameter.grad)


def test_training_and_sampling_stay_on_the_gpu(tmp_path):
    vae = VAEFlow((1, 28, 28), 4, **TINY).to(CUDA)
    for phase in ("vae", "glow"):
        history = fit(
            vae, fashion_pixels(32), phase, 1, 16, run_dir=tmp_path / phase, progress=False
        )
        assert torch.isfinite(torch.tensor(history[-1]["train_bpd"]))
    assert {p.device.type for p in vae.parameters()} == {"cuda"}
    samples = vae.sample(8, temperature=0.5)
    assert samples.device.type == "cuda"
    assert samples.shape == (8, 1, 28, 28)
    assert torch.isfinite(samples).all()
    resumed = fit(
        vae,
        fashion_pixels(32),
        "glow",
        2,
        16,
        run_dir=tmp_path / "glow",
        resume=True,
        progress=False,
    )
    assert [row["epoch"] for row in resumed] == [1, 2]


def test_a_run_trained_on_the_gpu_evaluates_on_the_cpu_and_samples_on_the_gpu(tmp_path):
    run = ["--run-dir", str(tmp_path), "--quiet"]
    tiny = ["--train-images", "48", "--vae-epochs", "1", "--glow-epochs", "1"]
    assert main(["train", *run, *tiny, "--device", "cuda"]) == 0
    model = load_model(tmp_path / "model.pt")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    evaluation = ["--no-fid", "--elbo-images", "8", "--is-images", "2", "--is-samples", "4"]
    assert main(["evaluate", *run, *evaluation]) == 0
    assert main(["sample", *run, "--n", "4", "--device", "cuda"]) == 0
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_batches_are_dequantised_on_the_gpu_and_validation_noise_stays_the_cpus():
    pixels = fashion_pixels(32)
    train = next(iter(Batches(pixels, 16, shuffle=False, device=CUDA)))
    assert train.device.type == "cuda"
    assert torch.equal((train * 256).floor().to(torch.uint8).cpu(), pixels[:16])
    val = next(iter(Batches(pixels, 16, shuffle=False, noise_seed=3, device=CUDA)))
    cpu_val = next(iter(Batches(pixels, 16, shuffle=False, noise_seed=3)))
    assert torch.equal(val.cpu(), cpu_val)


def test_compiled_bf16_training_on_the_gpu():
    vae = VAEFlow((1, 28, 28), **{"latent_dim": 4, **TINY}).to(CUDA)
    accelerate(vae, compile=True, precision="bf16")
    history = fit(vae, fashion_pixels(32), "joint", epochs=1, batch_size=16, progress=False)
    assert math.isfinite(history[-1]["train_bpd"])
